"""ListVolumes, ControllerGetVolume, GetCapacity, ControllerExpandVolume and ControllerModifyVolume over the socket."""

from __future__ import annotations

import json
import os
import shutil
import stat
from pathlib import Path
from typing import Callable, Iterator

import grpc
import pytest

from adapters.csi.v1 import csi_pb2 as csi
from tests.integration.conftest import SERVER, SHARE, Driver, create_request, mount_capability, start_driver

pytestmark = pytest.mark.integration
GIB = 1 << 30


def code_of(call: Callable[[], object]) -> grpc.StatusCode:
    with pytest.raises(grpc.RpcError) as caught:
        call()
    return caught.value.code()


@pytest.fixture
def driver(tmp_path: Path, export_root: Path) -> Iterator[Driver]:
    running = start_driver(tmp_path / "driver", "--shares", f"{SERVER}:{SHARE}")
    yield running
    assert running.stop() == 0, running.log.read_text()


def on_disk(root: Path) -> dict[str, tuple[int, bytes]]:
    """Every path below root with its mode and, for files, its bytes: to prove a call changed nothing."""
    return {
        str(p.relative_to(root)): (p.lstat().st_mode, p.read_bytes() if p.is_file() else b"")
        for p in sorted(root.rglob("*"))
    }


def list_all(driver: Driver, page_size: int) -> list[str]:
    ids: list[str] = []
    response = driver.controller.ListVolumes(csi.ListVolumesRequest(max_entries=page_size))
    while True:
        assert len(response.entries) <= (page_size or len(response.entries))
        ids += [entry.volume.volume_id for entry in response.entries]
        if not response.next_token:
            return ids
        response = driver.controller.ListVolumes(
            csi.ListVolumesRequest(max_entries=page_size, starting_token=response.next_token)
        )


class TestCapabilities:
    def test_the_new_rpcs_and_online_expansion_are_advertised(self, driver: Driver) -> None:
        controller = driver.controller.ControllerGetCapabilities(csi.ControllerGetCapabilitiesRequest())
        names = {csi.ControllerServiceCapability.RPC.Type.Name(c.rpc.type) for c in controller.capabilities}
        assert {"LIST_VOLUMES", "GET_CAPACITY", "EXPAND_VOLUME", "GET_VOLUME", "VOLUME_CONDITION", "MODIFY_VOLUME"} <= names
        plugin = driver.identity.GetPluginCapabilities(csi.GetPluginCapabilitiesRequest())
        expansion = [c.volume_expansion.type for c in plugin.capabilities if c.HasField("volume_expansion")]
        assert expansion == [csi.PluginCapability.VolumeExpansion.ONLINE]


class TestListVolumes:
    def test_pages_through_every_volume_once(self, driver: Driver) -> None:
        created = {driver.controller.CreateVolume(create_request(f"pvc-{i}", subDir=f"ns{i % 2}/pvc-{i}")).volume.volume_id for i in range(5)}
        assert sorted(list_all(driver, 2)) == sorted(created)
        assert sorted(list_all(driver, 0)) == sorted(created)
        first = driver.controller.ListVolumes(csi.ListVolumesRequest(max_entries=2))
        assert len(first.entries) == 2 and first.next_token
        assert first.entries[0].volume.capacity_bytes == GIB
        assert not first.entries[0].status.volume_condition.abnormal

    def test_a_bad_token_is_aborted(self, driver: Driver) -> None:
        request = csi.ListVolumesRequest(starting_token="invalid-token")
        assert code_of(lambda: driver.controller.ListVolumes(request)) == grpc.StatusCode.ABORTED

    def test_a_token_survives_deleting_its_volume_and_a_volume_added_meanwhile_shows_up(self, driver: Driver) -> None:
        for name in ("a", "b", "c"):
            driver.controller.CreateVolume(create_request(name))
        first = driver.controller.ListVolumes(csi.ListVolumesRequest(max_entries=2))
        for entry in first.entries:
            driver.controller.DeleteVolume(csi.DeleteVolumeRequest(volume_id=entry.volume.volume_id))
        added = driver.controller.CreateVolume(create_request("d")).volume.volume_id
        rest = driver.controller.ListVolumes(csi.ListVolumesRequest(max_entries=2, starting_token=first.next_token))
        ids = [entry.volume.volume_id for entry in rest.entries]
        assert len(ids) == 2 and ids[-1] == added and not set(ids) & {e.volume.volume_id for e in first.entries}

    def test_a_volume_whose_directory_was_deleted_is_listed_abnormal(self, driver: Driver, export_dir: Path) -> None:
        driver.controller.CreateVolume(create_request("pvc-1"))
        shutil.rmtree(export_dir / "pvc-1")
        (entry,) = driver.controller.ListVolumes(csi.ListVolumesRequest()).entries
        assert entry.status.volume_condition.abnormal and "missing" in entry.status.volume_condition.message


class TestControllerGetVolume:
    def test_a_volume_is_returned_normal_then_abnormal_once_its_directory_is_gone(
        self, driver: Driver, export_dir: Path
    ) -> None:
        volume = driver.controller.CreateVolume(create_request("pvc-1")).volume
        got = driver.controller.ControllerGetVolume(csi.ControllerGetVolumeRequest(volume_id=volume.volume_id))
        assert got.volume == volume and not got.status.volume_condition.abnormal
        shutil.rmtree(export_dir / "pvc-1")
        got = driver.controller.ControllerGetVolume(csi.ControllerGetVolumeRequest(volume_id=volume.volume_id))
        assert got.status.volume_condition.abnormal
        assert "'pvc-1' is missing" in got.status.volume_condition.message

    @pytest.mark.parametrize("volume_id", ["fake-vol-id-1", f"nfs1#{SERVER}#{SHARE}#gone#delete"])
    def test_a_missing_volume_is_not_found(self, driver: Driver, volume_id: str) -> None:
        request = csi.ControllerGetVolumeRequest(volume_id=volume_id)
        assert code_of(lambda: driver.controller.ControllerGetVolume(request)) == grpc.StatusCode.NOT_FOUND


class TestGetCapacity:
    def test_is_the_free_space_of_the_share_the_parameters_name(self, driver: Driver, export_dir: Path) -> None:
        response = driver.controller.GetCapacity(
            csi.GetCapacityRequest(volume_capabilities=[mount_capability()], parameters={"server": SERVER, "share": SHARE})
        )
        info = os.statvfs(export_dir)
        assert abs(response.available_capacity - info.f_bavail * info.f_frsize) <= 64 << 20
        assert response.available_capacity > 0

    def test_without_parameters_is_zero(self, driver: Driver) -> None:
        assert driver.controller.GetCapacity(csi.GetCapacityRequest()).available_capacity == 0

    def test_parameters_create_volume_would_refuse_are_invalid(self, driver: Driver) -> None:
        request = csi.GetCapacityRequest(parameters={"server": SERVER, "share": SHARE, "bogus": "1"})
        assert code_of(lambda: driver.controller.GetCapacity(request)) == grpc.StatusCode.INVALID_ARGUMENT


class TestControllerExpandVolume:
    def test_records_the_new_size_and_a_smaller_request_returns_it(self, driver: Driver, export_dir: Path) -> None:
        volume = driver.controller.CreateVolume(create_request("pvc-1")).volume

        def expand(required: int, limit: int = 0) -> csi.ControllerExpandVolumeResponse:
            request = csi.ControllerExpandVolumeRequest(
                volume_id=volume.volume_id, capacity_range=csi.CapacityRange(required_bytes=required, limit_bytes=limit)
            )
            response: csi.ControllerExpandVolumeResponse = driver.controller.ControllerExpandVolume(request)
            return response

        grown = expand(3 * GIB)
        assert (grown.capacity_bytes, grown.node_expansion_required) == (3 * GIB, True)
        assert json.loads((export_dir / ".pvc-1.nfs-csi.json").read_bytes())["capacity_bytes"] == 3 * GIB
        assert expand(2 * GIB).capacity_bytes == 3 * GIB
        assert code_of(lambda: expand(0, 2 * GIB)) == grpc.StatusCode.OUT_OF_RANGE
        listed = driver.controller.ControllerGetVolume(csi.ControllerGetVolumeRequest(volume_id=volume.volume_id))
        assert listed.volume.capacity_bytes == 3 * GIB

    def test_a_missing_volume_is_not_found_and_a_missing_range_invalid(self, driver: Driver) -> None:
        missing = csi.ControllerExpandVolumeRequest(
            volume_id=f"nfs1#{SERVER}#{SHARE}#gone#delete", capacity_range=csi.CapacityRange(required_bytes=GIB)
        )
        assert code_of(lambda: driver.controller.ControllerExpandVolume(missing)) == grpc.StatusCode.NOT_FOUND
        no_range = csi.ControllerExpandVolumeRequest(volume_id=f"nfs1#{SERVER}#{SHARE}#gone#delete")
        assert code_of(lambda: driver.controller.ControllerExpandVolume(no_range)) == grpc.StatusCode.INVALID_ARGUMENT


class TestControllerModifyVolume:
    def test_mount_permissions_change_the_directory_at_once_and_are_recorded(self, driver: Driver, export_dir: Path) -> None:
        volume = driver.controller.CreateVolume(create_request("pvc-1", mountPermissions="0777")).volume
        driver.controller.ControllerModifyVolume(
            csi.ControllerModifyVolumeRequest(volume_id=volume.volume_id, mutable_parameters={"mountPermissions": "0750"})
        )
        assert stat.S_IMODE((export_dir / "pvc-1").stat().st_mode) == 0o750
        record = json.loads((export_dir / ".pvc-1.nfs-csi.json").read_bytes())
        assert record["mutable_parameters"] == {"mountPermissions": "0750"}
        assert record["parameters"]["mountPermissions"] == "0777"

    def test_the_owner_is_given_on_create_and_changed_on_modify(self, driver: Driver, export_dir: Path) -> None:
        # Given a StorageClass asking for uid 1000, gid 2000 and a set-gid group directory
        volume = driver.controller.CreateVolume(
            create_request("pvc-1", uid="1000", gid="2000", mountPermissions="2770")
        ).volume
        info = (export_dir / "pvc-1").stat()
        assert (info.st_uid, info.st_gid, stat.S_IMODE(info.st_mode)) == (1000, 2000, 0o2770)
        # When a VolumeAttributesClass changes the group, then at once, the rest kept, and it is recorded
        driver.controller.ControllerModifyVolume(
            csi.ControllerModifyVolumeRequest(volume_id=volume.volume_id, mutable_parameters={"gid": "3000"})
        )
        info = (export_dir / "pvc-1").stat()
        assert (info.st_uid, info.st_gid, stat.S_IMODE(info.st_mode)) == (1000, 3000, 0o2770)
        record = json.loads((export_dir / ".pvc-1.nfs-csi.json").read_bytes())
        assert record["mutable_parameters"] == {"gid": "3000"} and record["parameters"]["gid"] == "2000"
        # and a bad value is INVALID_ARGUMENT with nothing changed
        before = on_disk(export_dir)
        bad = csi.ControllerModifyVolumeRequest(volume_id=volume.volume_id, mutable_parameters={"uid": "5", "gid": "-1"})
        assert code_of(lambda: driver.controller.ControllerModifyVolume(bad)) == grpc.StatusCode.INVALID_ARGUMENT
        assert on_disk(export_dir) == before and (export_dir / "pvc-1").stat().st_uid == 1000

    @pytest.mark.parametrize("params", [{"XXX_FakeKey": "XXX_FakeValue"}, {"mountPermissions": "0750", "mountOptions": "hard"}])
    def test_an_unsupported_key_is_invalid_and_nothing_changes_on_disk(
        self, driver: Driver, export_root: Path, params: dict[str, str]
    ) -> None:
        volume = driver.controller.CreateVolume(create_request("pvc-1", mountPermissions="0777")).volume
        before = on_disk(export_root)
        request = csi.ControllerModifyVolumeRequest(volume_id=volume.volume_id, mutable_parameters=params)
        assert code_of(lambda: driver.controller.ControllerModifyVolume(request)) == grpc.StatusCode.INVALID_ARGUMENT
        assert on_disk(export_root) == before

    def test_a_missing_volume_is_not_found(self, driver: Driver) -> None:
        request = csi.ControllerModifyVolumeRequest(volume_id="non-existing-volume-id", mutable_parameters={"mountPermissions": "0750"})
        assert code_of(lambda: driver.controller.ControllerModifyVolume(request)) == grpc.StatusCode.NOT_FOUND

    def test_create_with_an_unsupported_mutable_parameter_is_invalid_and_makes_nothing(
        self, driver: Driver, export_root: Path
    ) -> None:
        before = on_disk(export_root)
        request = create_request("pvc-1")
        request.mutable_parameters["XXX_FakeKey"] = "XXX_FakeValue"
        assert code_of(lambda: driver.controller.CreateVolume(request)) == grpc.StatusCode.INVALID_ARGUMENT
        assert on_disk(export_root) == before


class TestValidateVolumeCapabilities:
    def test_a_missing_volume_is_not_found(self, driver: Driver) -> None:
        request = csi.ValidateVolumeCapabilitiesRequest(
            volume_id=f"nfs1#{SERVER}#{SHARE}#gone#delete", volume_capabilities=[mount_capability()]
        )
        assert code_of(lambda: driver.controller.ValidateVolumeCapabilities(request)) == grpc.StatusCode.NOT_FOUND

    def test_block_is_never_confirmed_and_supported_mutable_parameters_are(self, driver: Driver) -> None:
        volume = driver.controller.CreateVolume(create_request("pvc-1")).volume
        block = csi.VolumeCapability(
            block=csi.VolumeCapability.BlockVolume(),
            access_mode=csi.VolumeCapability.AccessMode(mode=csi.VolumeCapability.AccessMode.SINGLE_NODE_WRITER),
        )
        refused = driver.controller.ValidateVolumeCapabilities(
            csi.ValidateVolumeCapabilitiesRequest(volume_id=volume.volume_id, volume_capabilities=[block])
        )
        assert not refused.HasField("confirmed") and "block" in refused.message
        confirmed = driver.controller.ValidateVolumeCapabilities(
            csi.ValidateVolumeCapabilitiesRequest(
                volume_id=volume.volume_id,
                volume_capabilities=[mount_capability()],
                mutable_parameters={"mountPermissions": "0750"},
            )
        )
        assert dict(confirmed.confirmed.mutable_parameters) == {"mountPermissions": "0750"}
