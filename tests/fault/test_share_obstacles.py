"""Files, links and FIFOs on the share, at or on the way to a volume's directory: a precise answer, nothing written.

A real share holds more than this driver's volumes. Whatever is not a plain directory where a volume's path needs
one is never followed or opened, and each RPC answers what the spec says for what is (not) there: a volume id
through it does not exist (NOT_FOUND, DeleteVolume OK), a CreateVolume onto it is FAILED_PRECONDITION with nothing
written, and a recorded volume whose directory was replaced by it can still be deleted, without a hang.
"""

from __future__ import annotations

import os
import stat
import time
from pathlib import Path
from typing import Callable, Iterator

import grpc
import pytest

from adapters.csi.v1 import csi_pb2 as csi
from domain.model import METADATA_DIR
from tests.fault.conftest import SERVER, FaultDriver, Lab, code_of, create_request, error_of, mount_capability, volume_id_for

pytestmark = pytest.mark.integration

KINDS = ("file", "link", "fifo")
FS_TIMEOUT = 5  # a call that blocked on a FIFO would end at this bound as DEADLINE_EXCEEDED


def plant(path: Path, kind: str, outside: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if kind == "file":
        path.write_text("a user's file\n")
    elif kind == "link":
        path.symlink_to(outside)
    else:
        os.mkfifo(path)


def tree(root: Path) -> dict[str, str]:
    """Every entry below root by lstat, links and FIFOs never followed or opened."""
    found = {}
    for top, dirs, files in os.walk(root):
        for name in dirs + files:
            path = Path(top, name)
            mode = os.lstat(path).st_mode
            kind = "link" if stat.S_ISLNK(mode) else "dir" if stat.S_ISDIR(mode) else "fifo" if stat.S_ISFIFO(mode) else "file"
            found[str(path.relative_to(root))] = kind + (f":{path.read_text()}" if kind == "file" else "")
    return found


@pytest.fixture
def outside(lab: Lab) -> Path:
    """Data beside the share on the same server, where the planted links lead."""
    victim = lab.root / SERVER / "victim"
    (victim / "volume").mkdir(parents=True)
    (victim / "volume" / "data").write_text("keep")
    (victim / ".volume.nfs-csi.json").write_text('{"name": "not-yours", "capacity_bytes": 1, "parameters": {}}')
    return victim


@pytest.fixture
def driver(lab: Lab) -> Iterator[FaultDriver]:
    yield lab.start("--fs-timeout", str(FS_TIMEOUT), mode="controller")


def timed(call: Callable[[], object]) -> float:
    started = time.monotonic()
    try:
        call()
    except grpc.RpcError:
        pass
    return time.monotonic() - started


class TestAnIdThroughSomethingNotADirectory:
    def test_is_a_volume_that_does_not_exist(self, driver: FaultDriver, lab: Lab, outside: Path) -> None:
        for kind in KINDS:
            plant(lab.export / kind, kind, outside)
        before = tree(lab.root)
        controller, capability = driver.controller, mount_capability()
        for kind in KINDS:
            for subdir in (f"{kind}/volume", kind):  # through it, and (the record beside it) at it
                volume_id = volume_id_for(subdir)
                calls = {
                    "ControllerGetVolume": lambda: controller.ControllerGetVolume(csi.ControllerGetVolumeRequest(volume_id=volume_id), timeout=30),
                    "ValidateVolumeCapabilities": lambda: controller.ValidateVolumeCapabilities(csi.ValidateVolumeCapabilitiesRequest(volume_id=volume_id, volume_capabilities=[capability]), timeout=30),
                    "ControllerExpandVolume": lambda: controller.ControllerExpandVolume(csi.ControllerExpandVolumeRequest(volume_id=volume_id, capacity_range=csi.CapacityRange(required_bytes=2 << 30)), timeout=30),
                    "ControllerModifyVolume": lambda: controller.ControllerModifyVolume(csi.ControllerModifyVolumeRequest(volume_id=volume_id, mutable_parameters={"mountPermissions": "0775"}), timeout=30),
                    "CreateSnapshot": lambda: controller.CreateSnapshot(csi.CreateSnapshotRequest(name=f"s-{kind}", source_volume_id=volume_id), timeout=30),
                    "CreateVolume from it": lambda: controller.CreateVolume(clone_of(volume_id, f"c-{kind}"), timeout=30),
                }  # fmt: skip
                codes = {name: code_of(call) for name, call in calls.items()}
                assert codes == dict.fromkeys(calls, grpc.StatusCode.NOT_FOUND), (subdir, codes)
                controller.DeleteVolume(csi.DeleteVolumeRequest(volume_id=volume_id), timeout=30)
        # a static volume's context naming a subDir through it
        static = csi.ValidateVolumeCapabilitiesRequest(
            volume_id="admin-handle", volume_capabilities=[capability],
            volume_context={"server": SERVER, "share": "/exports", "subDir": "link/volume"},
        )  # fmt: skip
        assert code_of(lambda: controller.ValidateVolumeCapabilities(static, timeout=30)) == grpc.StatusCode.NOT_FOUND
        assert tree(lab.root) == before


def clone_of(volume_id: str, name: str) -> csi.CreateVolumeRequest:
    request = create_request(name)
    request.volume_content_source.volume.volume_id = volume_id
    return request


class TestCreateVolumeOntoSomethingNotADirectory:
    @pytest.mark.parametrize("kind", KINDS)
    def test_is_failed_precondition_naming_it_and_writes_nothing_until_it_is_gone(
        self, driver: FaultDriver, lab: Lab, outside: Path, kind: str
    ) -> None:
        plant(lab.export / "team" / "pvc-1", kind, outside)  # at the volume's place
        plant(lab.export / "notes", kind, outside)  # on the way to it
        plant(lab.export / "ns" / ".pvc-2.nfs-csi.json", kind if kind != "file" else "fifo", outside)  # its record's
        before = tree(lab.root)
        for name, subdir, blocker in (("pvc-1", "team/pvc-1", "team/pvc-1"), ("pvc-3", "notes/a/pvc-3", "notes"),
                                      ("pvc-2", "ns/pvc-2", "ns/.pvc-2.nfs-csi.json")):  # fmt: skip
            error = error_of(lambda: driver.controller.CreateVolume(create_request(name, subDir=subdir), timeout=30))
            assert (error.code(), f"'{blocker}'" in (error.details() or "")) == (grpc.StatusCode.FAILED_PRECONDITION, True)
            assert tree(lab.root) == before  # no record, no index entry, no parent made
        for blocker in ("team/pvc-1", "notes", "ns/.pvc-2.nfs-csi.json"):
            (lab.export / blocker).unlink()
        for name, subdir in (("pvc-1", "team/pvc-1"), ("pvc-3", "notes/a/pvc-3"), ("pvc-2", "ns/pvc-2")):
            volume = driver.controller.CreateVolume(create_request(name, subDir=subdir), timeout=30).volume
            assert volume.volume_context["subDir"] == subdir and (lab.export / subdir).is_dir()


class TestARecordedVolumeWhoseDirectoryWasReplaced:
    @pytest.mark.parametrize("kind", KINDS)
    def test_is_deleted_at_once_leaving_what_replaced_it(self, driver: FaultDriver, lab: Lab, outside: Path, kind: str) -> None:
        ids = {}
        for policy in ("delete", "archive", "retain"):
            ids[policy] = driver.controller.CreateVolume(create_request(f"v-{policy}", onDelete=policy), timeout=30).volume.volume_id
            (lab.export / f"v-{policy}").rmdir()
            plant(lab.export / f"v-{policy}", kind, outside)
        outside_before = tree(outside)
        for policy, volume_id in ids.items():
            # a FIFO opened to be walked would block this call until --fs-timeout, and the share's thread for good
            seconds = timed(lambda: driver.controller.DeleteVolume(csi.DeleteVolumeRequest(volume_id=volume_id), timeout=30))
            assert seconds < FS_TIMEOUT / 2, f"{policy}: DeleteVolume took {seconds:.1f} s"
            driver.controller.DeleteVolume(csi.DeleteVolumeRequest(volume_id=volume_id), timeout=30)
        replaced = {"file": "file:a user's file\n", "link": "link", "fifo": "fifo"}[kind]
        # the records and index entries are gone; what replaced each directory stays as it was
        assert tree(lab.export) == {**{f"v-{p}": replaced for p in ids}, METADATA_DIR: "dir", f"{METADATA_DIR}/volumes": "dir"}
        assert tree(outside) == outside_before

    @pytest.mark.parametrize("kind", KINDS)
    def test_is_no_source_to_snapshot_or_clone(self, driver: FaultDriver, lab: Lab, outside: Path, kind: str) -> None:
        volume_id = driver.controller.CreateVolume(create_request("source"), timeout=30).volume.volume_id
        (lab.export / "source").rmdir()
        plant(lab.export / "source", kind, outside)
        before = tree(lab.root)
        snapshot = csi.CreateSnapshotRequest(name="snap", source_volume_id=volume_id)
        assert code_of(lambda: driver.controller.CreateSnapshot(snapshot, timeout=30)) == grpc.StatusCode.NOT_FOUND
        assert code_of(lambda: driver.controller.CreateVolume(clone_of(volume_id, "clone"), timeout=30)) == grpc.StatusCode.NOT_FOUND
        assert tree(lab.root) == before  # no clone directory, no clone record, no archive


class TestDeleteVolumeTrustsTheRecord:
    @pytest.mark.parametrize("recorded, sent", [("retain", "delete"), ("archive", "delete"), ("delete", "retain")])
    def test_an_id_with_another_on_delete_policy_is_refused_and_changes_nothing(
        self, driver: FaultDriver, lab: Lab, recorded: str, sent: str
    ) -> None:
        volume_id = driver.controller.CreateVolume(create_request("pvc-1", onDelete=recorded), timeout=30).volume.volume_id
        (lab.export / "pvc-1" / "data").write_text("a pod's data")
        edited = volume_id.removesuffix(f"#{recorded}") + f"#{sent}"
        before = tree(lab.root)
        error = error_of(lambda: driver.controller.DeleteVolume(csi.DeleteVolumeRequest(volume_id=edited), timeout=30))
        assert error.code() == grpc.StatusCode.FAILED_PRECONDITION and f"onDelete '{recorded}'" in (error.details() or "")
        assert tree(lab.root) == before
        driver.controller.DeleteVolume(csi.DeleteVolumeRequest(volume_id=volume_id), timeout=30)  # the real id: as recorded
        assert not (lab.export / ".pvc-1.nfs-csi.json").exists()
