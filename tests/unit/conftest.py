"""Fixtures the use-case tests share: the fake storage, the locks, and CreateVolume over them."""

from __future__ import annotations

import pytest

from domain.locks import VolumeLocks
from domain.parameters import ProvisionDefaults
from domain.usecases.controller import CreateVolume
from tests.fakes import FakeShareStorage


@pytest.fixture
def storage() -> FakeShareStorage:
    return FakeShareStorage()


@pytest.fixture
def locks() -> VolumeLocks:
    return VolumeLocks()


@pytest.fixture
def provision(storage: FakeShareStorage, locks: VolumeLocks) -> CreateVolume:
    return CreateVolume(storage, locks, ProvisionDefaults())
