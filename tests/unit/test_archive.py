"""Snapshot archives: packing keeps what matters, unpacking refuses anything that would escape."""

from __future__ import annotations

import io
import os
import tarfile
from pathlib import Path

import pytest

from adapters.storage.archive import UnsafeArchive, pack, unpack
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


@pytest.mark.parametrize("fmt", ["tar.gz", "tar"])
def test_a_packed_tree_unpacks_with_its_modes_owners_times_and_links(tmp_path: Path, fmt: str) -> None:
    source = tmp_path / "src"
    (source / "sub").mkdir(parents=True)
    (source / "sub" / "file").write_text("data")
    os.chmod(source / "sub" / "file", 0o640)
    os.chown(source / "sub" / "file", 1234, 5678)
    os.utime(source / "sub" / "file", (1_000_000_000, 1_000_000_000))
    (source / "link").symlink_to("sub/file")
    buffer = io.BytesIO()
    pack(str(source), buffer, fmt)
    buffer.seek(0)
    dest = tmp_path / "dest"
    dest.mkdir()
    unpack(buffer, str(dest))
    restored = (dest / "sub" / "file").stat()
    assert (dest / "sub" / "file").read_text() == "data"
    assert (restored.st_mode & 0o777, restored.st_uid, restored.st_gid, int(restored.st_mtime)) == (0o640, 1234, 5678, 1_000_000_000)
    assert os.readlink(dest / "link") == "sub/file"


def test_an_unknown_format_is_invalid_argument(tmp_path: Path) -> None:
    with pytest.raises(InvalidArgument):
        pack(str(tmp_path), io.BytesIO(), "zip")


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
        [member("dot", tarfile.SYMTYPE, "."), member("dot/x", tarfile.SYMTYPE, "../escape")],
        [member("dev", tarfile.CHRTYPE)],
        [member("fifo", tarfile.FIFOTYPE)],
    ],
    ids=["absolute", "dotdot", "nested-dotdot", "abs-link-then-through", "link-up", "nested-link-up", "hardlink-up",
         "link-chain", "device", "fifo"],
)
def test_unsafe_members_are_refused_and_nothing_lands_outside(tmp_path: Path, members: list[tarfile.TarInfo]) -> None:
    dest = tmp_path / "area" / "dest"
    dest.mkdir(parents=True)
    before = sorted(p.name for p in (tmp_path / "area").iterdir())
    with pytest.raises(UnsafeArchive):
        unpack(archive_of(*members), str(dest))
    assert sorted(p.name for p in (tmp_path / "area").iterdir()) == before
    assert not Path("/etc/evil").exists()


def test_links_that_stay_inside_are_kept(tmp_path: Path) -> None:
    dest = tmp_path / "dest"
    dest.mkdir()
    unpack(archive_of(member("d/file"), member("d/up", tarfile.SYMTYPE, "../d/file")), str(dest))
    assert (dest / "d" / "up").read_text() == "x"
