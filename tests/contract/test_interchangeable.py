"""Both real adapters on one share: what one writes, the other reads, so a controller can switch modes."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import pytest

from adapters.storage.share_storage import FileShareStorage
from adapters.storage.userspace import NfsRsFileSystem
from domain.model import ShareRef, VolumeRecord
from tests.contract.conftest import _require_namespace, mounted_storage, userspace_options
from tests.contract.exports import DIR, FILE, DiskExport
from tests.integration.ganesha import Ganesha

pytestmark = pytest.mark.integration

RECORD = VolumeRecord("pvc-7", 1 << 30, {"server": "127.0.0.1", "subDir": "ns/pvc-7", "mountPermissions": "0770"})


@dataclass
class Pair:
    mounted: FileShareStorage
    userspace: FileShareStorage
    share: ShareRef
    export: DiskExport


@pytest.fixture
def pair(ganesha: Ganesha, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Pair]:
    """The stand-in bind-mounts ganesha's own export directory, so both adapters reach the same files."""
    _require_namespace()
    monkeypatch.setenv("NFS_STANDIN_ROOT", str(ganesha.standin_root))
    share, directory = ganesha.new_share("pair")
    both = Pair(
        mounted_storage(tmp_path / "work"),
        FileShareStorage(NfsRsFileSystem(userspace_options(ganesha))),
        share,
        DiskExport(directory, directory.parent / f"{directory.name}-outside"),
    )
    yield both
    both.mounted.close()
    both.userspace.close()


class TestSwitchingModes:
    def test_a_volume_made_by_the_mount_adapter_is_read_and_deleted_from_user_space(self, pair: Pair) -> None:
        pair.mounted.write_record(pair.share, "ns/pvc-7", RECORD)
        pair.mounted.create_volume_dir(pair.share, "ns/pvc-7", 0o770)
        (pair.export.root / "ns" / "pvc-7" / "data").write_text("written by a pod")

        assert pair.userspace.read_record(pair.share, "ns/pvc-7") == RECORD
        assert pair.userspace.exists(pair.share, "ns/pvc-7")
        pair.userspace.remove_volume_dir(pair.share, "ns/pvc-7")
        pair.userspace.remove_record(pair.share, "ns/pvc-7")

        assert pair.mounted.read_record(pair.share, "ns/pvc-7") is None
        assert not pair.mounted.exists(pair.share, "ns/pvc-7")
        assert pair.export.tree() == {"ns": DIR}

    def test_a_volume_made_from_user_space_is_read_and_archived_by_the_mount_adapter(self, pair: Pair) -> None:
        pair.userspace.write_record(pair.share, "ns/pvc-7", RECORD)
        pair.userspace.create_volume_dir(pair.share, "ns/pvc-7", 0o770)

        assert pair.mounted.read_record(pair.share, "ns/pvc-7") == RECORD
        assert pair.mounted.exists(pair.share, "ns/pvc-7")
        assert pair.export.mode("ns/pvc-7") == 0o770
        pair.mounted.rename_volume_dir(pair.share, "ns/pvc-7", "ns/archived-pvc-7-20261124T120000Z")
        pair.mounted.remove_record(pair.share, "ns/pvc-7")

        assert pair.userspace.exists(pair.share, "ns/archived-pvc-7-20261124T120000Z")
        assert not pair.userspace.exists(pair.share, "ns/pvc-7")
        assert pair.userspace.read_record(pair.share, "ns/pvc-7") is None
        assert pair.export.tree() == {"ns": DIR, "ns/archived-pvc-7-20261124T120000Z": DIR}

    def test_both_write_the_same_record_file_byte_for_byte(self, pair: Pair) -> None:
        pair.mounted.write_record(pair.share, "a", RECORD)
        pair.userspace.write_record(pair.share, "b", RECORD)
        assert pair.export.tree() == {".a.nfs-csi.json": FILE, ".b.nfs-csi.json": FILE}
        assert pair.export.read(".a.nfs-csi.json") == pair.export.read(".b.nfs-csi.json") == RECORD.to_json()

    def test_a_record_replaced_by_one_is_seen_replaced_by_the_other(self, pair: Pair) -> None:
        pair.userspace.write_record(pair.share, "v", RECORD)
        assert pair.mounted.read_record(pair.share, "v") == RECORD
        changed = VolumeRecord("pvc-7", 2 << 30, dict(RECORD.parameters))
        pair.mounted.write_record(pair.share, "v", changed)
        assert pair.userspace.read_record(pair.share, "v") == changed
