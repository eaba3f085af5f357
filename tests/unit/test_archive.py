"""Snapshot archives: packing keeps what matters, unpacking refuses anything that would escape.

The trees are walked and built by the storage core's walker and writer over the mount adapter's files (descriptors
opened without following links), on a local directory.
"""

from __future__ import annotations

import io
import os
import tarfile
from pathlib import Path

import pytest

from adapters.storage.archive import Deadline, UnrestorableLink, UnsafeArchive, copy_tree, pack_tree, unpack_tree
from adapters.storage.mounted import FdShareFiles
from adapters.storage.share_storage import TreeWriter, tree_entries
from domain.errors import InvalidArgument


def archive_of(*members: tarfile.TarInfo, data: bytes = b"x") -> io.BytesIO:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        for member in members:
            if member.isreg():
                member.size = len(data)
                archive.addfile(member, io.BytesIO(data))
            else:
                archive.addfile(member)
    buffer.seek(0)
    return buffer


def member(name: str, kind: bytes = tarfile.REGTYPE, link: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = link
    return info


def deadline() -> Deadline:
    return Deadline(60, "test")


def pack(source: Path, fmt: str) -> io.BytesIO:
    buffer = io.BytesIO()
    pack_tree(tree_entries(FdShareFiles(str(source.parent)), source.name), buffer, fmt, deadline())
    buffer.seek(0)
    return buffer


def unpack(archive: io.BytesIO, dest: Path) -> None:
    unpack_tree(archive, TreeWriter(FdShareFiles(str(dest.parent)), dest.name), deadline())


def a_tree(source: Path) -> None:
    (source / "sub").mkdir(parents=True)
    (source / "sub" / "file").write_text("data")
    os.chmod(source / "sub" / "file", 0o640)
    os.chown(source / "sub" / "file", 1234, 5678)
    os.utime(source / "sub" / "file", ns=(1_000_000_000_123_456_789, 1_000_000_000_123_456_789))
    (source / "link").symlink_to("sub/file")


def assert_restored(dest: Path) -> None:
    restored = (dest / "sub" / "file").stat()
    assert (dest / "sub" / "file").read_text() == "data"
    assert (restored.st_mode & 0o777, restored.st_uid, restored.st_gid, restored.st_mtime_ns) == (
        0o640, 1234, 5678, 1_000_000_000_123_456_789
    )
    assert os.readlink(dest / "link") == "sub/file"


@pytest.mark.parametrize("fmt", ["tar.gz", "tar"])
def test_a_packed_tree_unpacks_with_its_modes_owners_nanosecond_times_and_links(tmp_path: Path, fmt: str) -> None:
    a_tree(tmp_path / "src")
    dest = tmp_path / "dest"
    dest.mkdir()
    unpack(pack(tmp_path / "src", fmt), dest)
    assert_restored(dest)


def test_a_copied_tree_keeps_the_same(tmp_path: Path) -> None:
    a_tree(tmp_path / "src")
    dest = tmp_path / "dest"
    dest.mkdir()
    files = FdShareFiles(str(tmp_path))
    copy_tree(tree_entries(files, "src"), TreeWriter(files, "dest"), deadline())
    assert_restored(dest)


def test_an_unknown_format_is_invalid_argument(tmp_path: Path) -> None:
    with pytest.raises(InvalidArgument):
        pack(tmp_path, "zip")


@pytest.mark.parametrize("target", ["/etc/localtime", "../../outside", "x/../../../outside"])
def test_a_link_leaving_the_tree_is_refused_when_packing_not_found_out_at_restore(tmp_path: Path, target: str) -> None:
    source = tmp_path / "src"
    (source / "sub").mkdir(parents=True)
    (source / "sub" / "link").symlink_to(target)
    with pytest.raises(UnrestorableLink, match="could never be restored"):
        pack(source, "tar")


@pytest.mark.parametrize(
    "members",
    [
        [member("/etc/evil")],
        [member("../evil")],
        [member("a/../../evil")],
        [member("link", tarfile.SYMTYPE, "/etc"), member("link/passwd")],
        [member("link", tarfile.SYMTYPE, "../..")],
        [member("d/link", tarfile.SYMTYPE, "../../outside")],
        [member("hard", tarfile.LNKTYPE, "../outside")],
        [member("hard", tarfile.LNKTYPE, "inside")],
        [member("dot", tarfile.SYMTYPE, "."), member("dot/x", tarfile.SYMTYPE, "../escape")],
        [member("dev", tarfile.CHRTYPE)],
        [member("fifo", tarfile.FIFOTYPE)],
        [member("twice"), member("twice")],
    ],
    ids=["absolute", "dotdot", "nested-dotdot", "abs-link-then-through", "link-up", "nested-link-up", "hardlink-up",
         "hardlink", "link-chain", "device", "fifo", "twice"],
)
def test_unsafe_members_are_refused_and_nothing_lands_outside(tmp_path: Path, members: list[tarfile.TarInfo]) -> None:
    dest = tmp_path / "area" / "dest"
    dest.mkdir(parents=True)
    before = sorted(p.name for p in (tmp_path / "area").iterdir())
    with pytest.raises(UnsafeArchive):
        unpack(archive_of(*members), dest)
    assert sorted(p.name for p in (tmp_path / "area").iterdir()) == before
    assert not Path("/etc/evil").exists()


def test_links_that_stay_inside_are_kept(tmp_path: Path) -> None:
    dest = tmp_path / "dest"
    dest.mkdir()
    unpack(archive_of(member("d/file"), member("d/up", tarfile.SYMTYPE, "../d/file")), dest)
    assert (dest / "d" / "up").read_text() == "x"
