"""Each ShareStorage implementation under the one contract: the fake, the mount-based adapter, the userspace adapter."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import pytest

from adapters.mount.mountinfo import read_mountinfo
from adapters.mount.subprocess_mounter import RetryPolicy, SubprocessMounter
from adapters.storage.mounted import MountedFileSystem
from adapters.storage.share_storage import FileShareStorage
from adapters.storage.userspace import NfsClientOptions, NfsRsFileSystem
from domain.model import ShareRef
from ports.storage import ShareStorage
from tests.conftest import ROOT, in_private_namespace
from tests.contract.exports import DiskExport, ExportView, FakeExport
from tests.fakes import FakeShareStorage
from tests.integration.ganesha import Ganesha, ganesha  # noqa: F401 - the session's NFS server fixture

STANDIN = str(ROOT / "tests" / "standin" / "mount.nfs")
REAL = pytest.mark.integration


@dataclass
class Subject:
    """One implementation, a share it works on, and a view of that share from the server's side."""

    name: str
    storage: ShareStorage
    share: ShareRef
    export: ExportView


def userspace_options(ganesha: Ganesha, version: str = "4.1", **overrides: object) -> NfsClientOptions:
    settings: dict[str, object] = {"versions": (version,), "port": ganesha.port, "timeout": 10.0, **overrides}
    return NfsClientOptions(**settings)  # type: ignore[arg-type]


def mounted_storage(work: Path) -> FileShareStorage:
    mounter = SubprocessMounter(mount_command=STANDIN, retry=RetryPolicy(attempts=1))
    return FileShareStorage(MountedFileSystem(mounter, str(work)))


# Where an implementation breaks the contract today: the test still runs, and must fail (strict), until it is fixed.


def _require_namespace() -> None:
    if not in_private_namespace():
        pytest.fail("the mount-based adapter needs root and a private mount namespace: run as root (tests/conftest.py re-runs pytest under unshare)")


@pytest.fixture(
    params=[
        "fake",
        pytest.param("mounted", marks=REAL),
        pytest.param("userspace-4.1", marks=REAL),
        pytest.param("userspace-4.0", marks=REAL),
    ]
)
def subject(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Subject]:
    kind: str = request.param
    if kind == "fake":
        fake = FakeShareStorage()
        share = ShareRef("127.0.0.1", "/exports")
        fake.exports = {share}
        yield Subject(kind, fake, share, FakeExport(fake, share))
        return

    if kind == "mounted":
        _require_namespace()
        standin_root = tmp_path / "standin-root"
        export_dir = standin_root / "127.0.0.1" / "exports"
        export_dir.mkdir(parents=True)
        monkeypatch.setenv("NFS_STANDIN_ROOT", str(standin_root))
        storage: ShareStorage = mounted_storage(tmp_path / "work")
        share = ShareRef("127.0.0.1", "/exports")
    else:
        server: Ganesha = request.getfixturevalue("ganesha")
        share, export_dir = server.new_share()
        storage = FileShareStorage(NfsRsFileSystem(userspace_options(server, kind.split("-")[1])))

    export = DiskExport(export_dir, export_dir.parent / f"{export_dir.name}-outside")
    before = export.outside_state()
    yield Subject(kind, storage, share, export)
    storage.close()
    # Whatever the test did, nothing outside the share changed, and no temporary file was left in it.
    assert export.outside_state() == before, "a storage operation changed something outside the share"
    assert export.leftovers() == []
    assert [e.mount_point for e in read_mountinfo() if e.mount_point.startswith(str(tmp_path))] == []


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Cases marked on_disk_only plant files or links the fake cannot hold: they do not apply to it."""
    keep, drop = [], []
    for item in items:
        callspec = getattr(item, "callspec", None)
        is_fake = callspec is not None and callspec.params.get("subject") == "fake"
        (drop if is_fake and item.get_closest_marker("on_disk_only") else keep).append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep
