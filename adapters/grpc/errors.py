"""The one table from domain errors to gRPC status codes, applied by one decorator."""

from __future__ import annotations

import functools
import logging
from typing import Any, Callable, TypeVar

import grpc

from domain import errors

log = logging.getLogger(__name__)

STATUS_OF: tuple[tuple[type[errors.DomainError], grpc.StatusCode], ...] = (
    (errors.InvalidArgument, grpc.StatusCode.INVALID_ARGUMENT),
    (errors.NotFound, grpc.StatusCode.NOT_FOUND),
    (errors.AlreadyExists, grpc.StatusCode.ALREADY_EXISTS),
    (errors.OperationInFlight, grpc.StatusCode.ABORTED),
    (errors.InvalidToken, grpc.StatusCode.ABORTED),
    (errors.FailedPrecondition, grpc.StatusCode.FAILED_PRECONDITION),
    (errors.OutOfRange, grpc.StatusCode.OUT_OF_RANGE),
    (errors.DeadlineExceeded, grpc.StatusCode.DEADLINE_EXCEEDED),
    (errors.Unavailable, grpc.StatusCode.UNAVAILABLE),
    (errors.ResourceExhausted, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (errors.MountFailed, grpc.StatusCode.INTERNAL),
    (errors.StorageFailed, grpc.StatusCode.INTERNAL),
)


def status_of(error: errors.DomainError) -> grpc.StatusCode:
    for kind, code in STATUS_OF:
        if isinstance(error, kind):
            return code
    return grpc.StatusCode.INTERNAL


Handler = TypeVar("Handler", bound=Callable[..., Any])


def translate_errors(handler: Handler) -> Handler:
    """Turn a domain error into its status; anything unexpected into INTERNAL without a traceback to the caller."""

    @functools.wraps(handler)
    def wrapper(self: Any, request: Any, context: grpc.ServicerContext) -> Any:
        try:
            return handler(self, request, context)
        except errors.DomainError as err:
            context.abort(status_of(err), str(err))
        except Exception:
            log.exception("unexpected error in %s", handler.__name__)
            context.abort(grpc.StatusCode.INTERNAL, f"internal error in {handler.__name__}; see the driver's log")

    return wrapper  # type: ignore[return-value]
