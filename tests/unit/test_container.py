"""The composition root, with fakes in place of the outside: what app/container.py wires is what the RPCs run."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator

import grpc
import pytest
from dependency_injector import providers

from adapters.csi.v1 import csi_pb2 as csi
from app.container import Container
from app.server import build_container
from app.settings import parse
from domain.model import AccessMode, CapacityRange, ShareRef, VolumeCapability
from domain.usecases.controller import CreateVolumeCommand
from domain.usecases.node import NodePublishVolumeCommand
from tests.fakes import FakeClock, FakeMounter, FakePublicationStore, FakeShareStorage

SHARE = ShareRef("nfs.example", "/exports")
PARAMS = {"server": "nfs.example", "share": "/exports"}
RWX = VolumeCapability(AccessMode.MULTI_NODE_MULTI_WRITER)


class Fakes:
    def __init__(self) -> None:
        self.storage = FakeShareStorage()
        self.mounter = FakeMounter()
        self.publications = FakePublicationStore()
        self.clock = FakeClock()


@pytest.fixture
def fakes() -> Fakes:
    return Fakes()


@pytest.fixture
def container(tmp_path: Path, fakes: Fakes) -> Iterator[Container]:
    container = build_container(parse(["--nodeid", "node-1", "--state-dir", str(tmp_path / "state")]))
    with (
        container.storage.override(providers.Object(fakes.storage)),
        container.mounter.override(providers.Object(fakes.mounter)),
        container.publications.override(providers.Object(fakes.publications)),
        container.clock.override(providers.Object(fakes.clock)),
    ):
        yield container


class _Context:
    """The one thing a servicer asks of its gRPC context: to abort with a status."""

    def abort(self, code: grpc.StatusCode, details: str) -> Any:
        raise AssertionError(f"aborted with {code}: {details}")


def test_create_volume_runs_on_the_storage_the_container_holds_and_reports_to_its_metrics(
    container: Container, fakes: Fakes
) -> None:
    result = container.create_volume()(CreateVolumeCommand("pvc-1", (RWX,), CapacityRange(1 << 30), PARAMS))
    assert str(result.volume_id) == "nfs1#nfs.example#/exports#pvc-1#delete"
    assert (SHARE, "pvc-1") in fakes.storage.dirs
    assert fakes.storage.records[(SHARE, "pvc-1")].capacity_bytes == 1 << 30
    assert container.telemetry().registry.get_sample_value("nfs_csi_volumes_created_total") == 1


def test_the_controller_servicer_is_wired_to_the_same_use_cases(container: Container, fakes: Fakes) -> None:
    servicer = container.controller_servicer()
    request = csi.CreateVolumeRequest(
        name="pvc-2",
        volume_capabilities=[
            csi.VolumeCapability(mount=csi.VolumeCapability.MountVolume(), access_mode={"mode": RWX.access_mode.value})
        ],
        parameters={**PARAMS, "onDelete": "archive"},
    )
    created = servicer.CreateVolume(request, _Context())
    assert (SHARE, "pvc-2") in fakes.storage.dirs
    servicer.DeleteVolume(csi.DeleteVolumeRequest(volume_id=created.volume.volume_id), _Context())
    assert (SHARE, "pvc-2") not in fakes.storage.dirs  # archived: renamed with the fake clock's time
    assert (SHARE, "archived-pvc-2-20261124T120000Z") in fakes.storage.dirs
    assert fakes.storage.records == {}


def test_node_publish_volume_mounts_with_the_mounter_and_records_with_the_store(
    container: Container, fakes: Fakes
) -> None:
    volume_id, target = "nfs1#nfs.example#/exports#pvc-1#delete", "/pods/a/volumes/pvc-1/mount"
    container.node_publish_volume()(NodePublishVolumeCommand(volume_id, target, RWX))
    assert fakes.mounter.mounts == {target: ("nfs.example:/exports/pvc-1", ())}
    assert fakes.publications.publications[target].volume_id == volume_id
    assert container.node_servicer().NodeGetInfo(csi.NodeGetInfoRequest(), _Context()).node_id == "node-1"
