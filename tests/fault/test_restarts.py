"""Restarts: kill -9 the real driver at chosen points of CreateVolume, DeleteVolume, NodePublish and NodeUnpublish;
a fresh driver on the same directories then converges on the retry, leaving nothing behind.

How the points are chosen, from outside the driver (no test hook in its code):
- while mount.nfs runs: a stand-in (tests/standin/mount.nfs-gated) waits at a gate; the test kills the driver there,
  before the mount (the helper then dies, or finishes on its own later) or after it (mount done, no reply sent);
- at a system call: the driver runs under ``strace --inject=SYSCALL:signal=KILL``, which SIGKILLs it on entering the
  first such call: the record's fsync (written, not renamed) or rename (not committed), the volume directory's
  mkdirat, the first unlinkat of a delete, the archive's rename, the publication's rename, the target's rmdir.
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import json
import os
import signal
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import grpc
import pytest

from adapters.csi.v1 import csi_pb2 as csi
from domain.model import METADATA_DIR
from tests.fault.conftest import (
    FaultDriver,
    Lab,
    create_request,
    kill_groups,
    mounts_under,
    publish_request,
    standin_pids,
    strace_available,
    volume_id_for,
    wait_for,
)

pytestmark = pytest.mark.integration

VOLUME = volume_id_for("pvc-1")
ARCHIVED = volume_id_for("pvc-1", "archive")


def killed_at(*syscalls: str, when: int = 1) -> list[str]:
    """Run the driver under strace, which SIGKILLs it on entering the when-th call (per thread) of syscalls."""
    names = ",".join(syscalls)
    # --seccomp-bpf stops the driver only at the traced calls (fast), but strace 6.1 then miscounts when > 1.
    fast = ["--seccomp-bpf"] if when == 1 else []
    return [strace_available(), "-f", "-qq", "-o", "/dev/null", *fast, "-e", f"trace={names}",
            "-e", f"inject={names}:signal=KILL:when={when}"]  # fmt: skip


def call_dies(driver: FaultDriver, call: Callable[[], object]) -> None:
    """The call is cut off because the driver died of SIGKILL (not because it answered)."""
    with pytest.raises(grpc.RpcError) as caught:
        call()
    assert caught.value.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED, grpc.StatusCode.UNKNOWN)
    status = driver.wait_dead()
    assert status in (-signal.SIGKILL, 128 + signal.SIGKILL), status
    assert '"stopped"' not in driver.log_text()


def tree(root: Path) -> dict[str, str]:
    """What lies below root, but the driver's own METADATA_DIR (see ``index``)."""
    return {
        str(p.relative_to(root)): "dir" if p.is_dir() else "file"
        for p in sorted(root.rglob("*"))
        if p.relative_to(root).parts[0] != METADATA_DIR
    }


def index(export: Path) -> list[str]:
    """The share's volume index: one entry per recorded volume."""
    directory = export / METADATA_DIR / "volumes"
    return sorted(os.listdir(directory)) if directory.is_dir() else []


def no_temporaries(*roots: Path) -> None:
    left = [str(p) for root in roots for p in root.rglob("*") if ".tmp" in p.name]
    assert left == [], f"temporary files left behind: {left}"


@dataclass
class Node:
    lab: Lab
    workdir: Path
    target: Path

    def start(self, mount_command: str = "mount.nfs", **kwargs: object) -> FaultDriver:
        return self.lab.start(mount_command=mount_command, mode="node", workdir=self.workdir, **kwargs)  # type: ignore[arg-type]

    def publish(self, driver: FaultDriver) -> object:
        return driver.node.NodePublishVolume(publish_request(VOLUME, self.target), timeout=30)

    def unpublish(self, driver: FaultDriver) -> object:
        request = csi.NodeUnpublishVolumeRequest(volume_id=VOLUME, target_path=str(self.target))
        return driver.node.NodeUnpublishVolume(request, timeout=30)

    def converges(self) -> None:
        """A fresh driver: the retry publishes exactly one mount; unpublish then leaves no mount, target or record."""
        driver = self.start()
        self.publish(driver)
        self.publish(driver)
        assert mounts_under(self.target) == [str(self.target)]
        (self.target / "hello").write_text("through the mount")
        assert (self.lab.export / "pvc-1" / "hello").read_text() == "through the mount"
        self.unpublish(driver)
        assert mounts_under(self.target) == [] and not self.target.exists()
        publications = self.workdir / "state" / "publications"
        assert list(publications.iterdir()) == []
        assert driver.stop() == 0


@pytest.fixture
def node(lab: Lab) -> Node:
    (lab.export / "pvc-1").mkdir()
    return Node(lab, lab.tmp / "node", lab.tmp / "pod" / "mount")


@pytest.fixture
def gate(lab: Lab) -> Path:
    path = lab.tmp / "gate"
    path.mkdir()
    lab.env["NFS_STANDIN_GATE"] = str(path)
    return path


def arrived(gate: Path) -> list[Path]:
    return sorted(gate.glob("arrived-*"))


class TestNodePublishKilled:
    def test_while_mount_nfs_runs_and_dies_with_the_driver(self, node: Node, gate: Path) -> None:
        node.target.parent.mkdir()
        driver = node.start("mount.nfs-gated")
        with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
            call = pool.submit(node.publish, driver)
            wait_for(lambda: arrived(gate), 10, "mount.nfs to start")
            driver.kill9()
            with pytest.raises(grpc.RpcError):
                call.result()
        kill_groups(standin_pids("mount.nfs-gated"))  # as when the node plugin's container dies
        assert mounts_under(node.target) == []
        node.converges()

    def test_while_mount_nfs_runs_and_finishes_after_the_driver_died(self, node: Node, gate: Path) -> None:
        node.target.parent.mkdir()
        driver = node.start("mount.nfs-gated")
        with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
            call = pool.submit(node.publish, driver)
            wait_for(lambda: arrived(gate), 10, "mount.nfs to start")
            driver.kill9()
            with pytest.raises(grpc.RpcError):
                call.result()
        (gate / "open").touch()  # the orphaned helper mounts with nobody waiting for it
        wait_for(lambda: mounts_under(node.target), 10, "the orphaned mount.nfs to mount")
        wait_for(lambda: not standin_pids("mount.nfs-gated"), 10, "the orphaned mount.nfs to exit")
        node.converges()

    def test_after_the_mount_before_the_reply(self, node: Node, gate: Path) -> None:
        node.target.parent.mkdir()
        driver = node.start("mount.nfs-gated", env={"NFS_STANDIN_GATE_AFTER": "1"})
        with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
            call = pool.submit(node.publish, driver)
            wait_for(lambda: arrived(gate), 10, "the mount to be done")
            assert mounts_under(node.target) == [str(node.target)]
            driver.kill9()
            with pytest.raises(grpc.RpcError):
                call.result()
        kill_groups(standin_pids("mount.nfs-gated"))
        node.converges()

    def test_at_the_commit_of_the_publication_record(self, node: Node) -> None:
        node.target.parent.mkdir()
        driver = node.start(wrapper=killed_at("rename", "renameat", "renameat2"))
        call_dies(driver, lambda: node.publish(driver))
        publications = node.workdir / "state" / "publications"
        assert [p.suffix for p in publications.iterdir()] == [".tmp"]  # written, not committed
        node.converges()
        no_temporaries(node.workdir / "state")


class TestNodeUnpublishKilled:
    def test_after_the_unmount_before_the_target_is_removed(self, node: Node) -> None:
        node.target.parent.mkdir()
        first = node.start()
        node.publish(first)
        assert first.stop() == 0
        driver = node.start(wrapper=killed_at("rmdir"))
        call_dies(driver, lambda: node.unpublish(driver))
        assert mounts_under(node.target) == [] and node.target.is_dir()
        retried = node.start()
        node.unpublish(retried)
        assert not node.target.exists() and list((node.workdir / "state" / "publications").iterdir()) == []
        assert retried.stop() == 0


@dataclass
class Controller:
    lab: Lab
    workdir: Path

    def start(self, mount_command: str = "mount.nfs", **kwargs: object) -> FaultDriver:
        return self.lab.start(mount_command=mount_command, mode="controller", workdir=self.workdir, **kwargs)  # type: ignore[arg-type]

    def create(self, driver: FaultDriver, **params: str) -> csi.CreateVolumeResponse:
        return driver.controller.CreateVolume(create_request("pvc-1", **params), timeout=30)

    def delete(self, driver: FaultDriver, volume_id: str = VOLUME) -> object:
        return driver.controller.DeleteVolume(csi.DeleteVolumeRequest(volume_id=volume_id), timeout=30)

    def created_with_files(self, **params: str) -> None:
        driver = self.start()
        self.create(driver, **params)
        for name in ("a", "b", "c"):
            (self.lab.export / "pvc-1" / name).write_text(name)
        assert driver.stop() == 0

    def converges_on_create(self) -> None:
        driver = self.start()
        assert self.create(driver).volume.volume_id == VOLUME
        assert self.create(driver).volume.volume_id == VOLUME
        assert tree(self.lab.export) == {".pvc-1.nfs-csi.json": "file", "pvc-1": "dir"}
        assert index(self.lab.export) == [hashlib.sha256(b"pvc-1").hexdigest()]
        record = json.loads((self.lab.export / ".pvc-1.nfs-csi.json").read_text())
        assert record["name"] == "pvc-1" and record["capacity_bytes"] == 1 << 30
        assert driver.stop() == 0


@pytest.fixture
def controller(lab: Lab) -> Controller:
    return Controller(lab, lab.tmp / "controller")


class TestCreateVolumeKilled:
    def test_while_the_share_is_being_mounted(self, controller: Controller, gate: Path, lab: Lab) -> None:
        driver = controller.start("mount.nfs-gated")
        with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
            call = pool.submit(controller.create, driver)
            wait_for(lambda: arrived(gate), 10, "the share's mount.nfs to start")
            driver.kill9()
            with pytest.raises(grpc.RpcError):
                call.result()
        kill_groups(standin_pids("mount.nfs-gated"))
        assert tree(lab.export) == {}
        controller.converges_on_create()

    @pytest.mark.parametrize(
        ("syscalls", "left"),
        [
            (("fsync",), {".pvc-1.nfs-csi.json.tmp": "file"}),
            (("rename", "renameat", "renameat2"), {".pvc-1.nfs-csi.json.tmp": "file"}),
            (("mkdirat",), {".pvc-1.nfs-csi.json": "file"}),
        ],
        ids=["record-written-not-synced", "record-not-committed", "record-committed-no-directory"],
    )
    def test_at_a_chosen_system_call(
        self, controller: Controller, lab: Lab, syscalls: tuple[str, ...], left: dict[str, str]
    ) -> None:
        # On a share that already has the index's directories, so the first mkdirat is the volume's.
        (lab.export / METADATA_DIR / "volumes").mkdir(parents=True)
        driver = controller.start(wrapper=killed_at(*syscalls))
        call_dies(driver, lambda: controller.create(driver))
        assert tree(lab.export) == left
        controller.converges_on_create()
        no_temporaries(lab.export)


class TestDeleteVolumeKilled:
    def test_in_the_middle_of_removing_the_volume(self, controller: Controller, lab: Lab) -> None:
        controller.created_with_files()
        driver = controller.start(wrapper=killed_at("unlinkat", when=2))
        call_dies(driver, lambda: controller.delete(driver))
        assert len(os.listdir(lab.export / "pvc-1")) == 2 and (lab.export / ".pvc-1.nfs-csi.json").is_file()
        retried = controller.start()
        controller.delete(retried)
        controller.delete(retried)
        assert tree(lab.export) == {} and index(lab.export) == []
        assert retried.stop() == 0

    @pytest.mark.parametrize(
        "syscalls", [("rename", "renameat", "renameat2"), ("unlinkat",)], ids=["before-the-rename", "before-the-record-goes"]
    )
    def test_while_archiving(self, controller: Controller, lab: Lab, syscalls: tuple[str, ...]) -> None:
        controller.created_with_files(onDelete="archive")
        driver = controller.start(wrapper=killed_at(*syscalls))
        call_dies(driver, lambda: controller.delete(driver, ARCHIVED))
        retried = controller.start()
        controller.delete(retried, ARCHIVED)
        controller.delete(retried, ARCHIVED)
        archived = [name for name in os.listdir(lab.export) if name != METADATA_DIR]
        assert len(archived) == 1 and archived[0].startswith("archived-pvc-1-"), archived
        assert tree(lab.export / archived[0]) == {"a": "file", "b": "file", "c": "file"}
        assert retried.stop() == 0
