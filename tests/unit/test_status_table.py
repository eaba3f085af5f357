"""The one table from domain errors to gRPC codes."""

from __future__ import annotations

import grpc
import pytest

from adapters.grpc.errors import status_of
from adapters.mount.subprocess_mounter import TransientMountError
from domain import errors


@pytest.mark.parametrize(
    "error,code",
    [
        (errors.InvalidArgument("x"), grpc.StatusCode.INVALID_ARGUMENT),
        (errors.NotFound("x"), grpc.StatusCode.NOT_FOUND),
        (errors.AlreadyExists("x"), grpc.StatusCode.ALREADY_EXISTS),
        (errors.OperationInFlight("x"), grpc.StatusCode.ABORTED),
        (errors.InvalidToken("x"), grpc.StatusCode.ABORTED),
        (errors.FailedPrecondition("x"), grpc.StatusCode.FAILED_PRECONDITION),
        (errors.OutOfRange("x"), grpc.StatusCode.OUT_OF_RANGE),
        (errors.DeadlineExceeded("x"), grpc.StatusCode.DEADLINE_EXCEEDED),
        (errors.Unavailable("x"), grpc.StatusCode.UNAVAILABLE),
        (TransientMountError("x"), grpc.StatusCode.UNAVAILABLE),
        (errors.ResourceExhausted("x"), grpc.StatusCode.RESOURCE_EXHAUSTED),
        (errors.MountFailed("x"), grpc.StatusCode.INTERNAL),
        (errors.StorageFailed("x"), grpc.StatusCode.INTERNAL),
    ],
)
def test_each_domain_error_has_its_status(error: errors.DomainError, code: grpc.StatusCode) -> None:
    assert status_of(error) is code


def test_every_domain_error_class_is_in_the_table() -> None:
    classes = [c for c in vars(errors).values() if isinstance(c, type) and issubclass(c, errors.DomainError)]
    internal = (errors.DomainError, errors.MountFailed, errors.StorageFailed)  # INTERNAL on purpose
    unmapped = [c.__name__ for c in classes if c not in internal and status_of(c("x")) is grpc.StatusCode.INTERNAL]
    assert unmapped == []
