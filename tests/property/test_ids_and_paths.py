"""Properties, by hypothesis: volume ids round-trip; every path built from a request stays inside its base."""

from __future__ import annotations

import os
import posixpath
import tempfile
from pathlib import Path
from typing import Sequence

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from adapters.storage.mounted import MountedFileSystem
from adapters.storage.share_storage import FileShareStorage
from domain.errors import DomainError, InvalidArgument
from domain.model import CsiDriverNfsVolumeId, ExportPath, FilesystemUsage, OnDelete, ShareRef, VolumeId
from domain.paths import MAX_COMPONENT_BYTES, absolute_path, join_inside, relative_subpath
from ports.mounter import Mounter

# The traversal corpus: each alone, and as the pieces hypothesis combines.
TRAVERSAL = [
    "..", "../..", "/abs", "a/../../b", "%2e%2e", "%2e%2e/%2e%2e", "..%2f..", "\x00", "a\x00b", "\\", "..\\..",
    "a\\..\\..\\b", "\u2024\u2024", "\uff0e\uff0e", "\u2025", "\ufe52\ufe52", "\u3002\u3002", "./", "/", "//", ".",
    "x" * 4096, "y" * 255, "z" * 256, "a/" * 600, "\u202e..", "\u200b..", " ..", ".. ", "...", "~", "-o",
]  # fmt: skip
piece = st.sampled_from(TRAVERSAL) | st.text(alphabet=st.sampled_from(list("ab./\\%2e\x00\uff0e-")), max_size=12)
path_like = st.lists(piece, min_size=1, max_size=6).map("".join) | st.text(max_size=64) | st.sampled_from(TRAVERSAL)

hostname = st.from_regex(r"\A[a-z0-9](?:[a-z0-9-]{0,20}\.){0,3}[a-z0-9]{1,10}\Z")
ipv4 = st.ip_addresses(v=4).map(str)
ipv6 = st.ip_addresses(v=6).map(lambda a: f"[{a}]")
component = st.text(
    alphabet=st.characters(blacklist_categories=("Cc", "Cf", "Cs", "Co", "Cn", "Zs", "Zl", "Zp"), blacklist_characters="/,\\#%.\u0085\u00a0"),
    min_size=1,
    max_size=30,
) | st.from_regex(r"\A[a-z0-9][a-z0-9.%#_-]{0,30}\Z")
subdir = st.lists(component, min_size=1, max_size=4).map("/".join)
share = st.lists(component, min_size=0, max_size=3).map(lambda parts: "/" + "/".join(parts))

fast = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


class TestVolumeIdRoundTrip:
    @fast
    @given(server=hostname | ipv4 | ipv6, share=share, subdir=subdir, on_delete=st.sampled_from(list(OnDelete)))
    def test_format_then_parse_gives_the_same_volume(self, server: str, share: str, subdir: str, on_delete: OnDelete) -> None:
        try:
            volume = VolumeId(ShareRef.parse(server, share), relative_subpath(subdir, "subDir"), on_delete)
        except InvalidArgument:
            return  # not a volume the driver would make
        assert VolumeId.parse(str(volume)) == volume
        assert str(VolumeId.parse(str(volume))) == str(volume)

    @fast
    @given(raw=st.text(max_size=200) | st.lists(path_like, min_size=5, max_size=5).map(lambda p: "nfs1#" + "#".join(p[1:])))
    @example("nfs1#127.0.0.1#/exports#%2E%2E#delete")
    @example("nfs1#127.0.0.1#/exports#a%2F..%2F..%2Fb#delete")
    def test_any_string_parses_to_nothing_or_to_a_canonical_contained_volume(self, raw: str) -> None:
        volume = VolumeId.parse(raw)
        if volume is None:
            return
        assert str(volume) == raw
        assert join_inside("/base", volume.subdir).startswith("/base/")
        assert ".." not in volume.subdir.split("/") and ".." not in volume.share.share.split("/")


class TestCsiDriverNfsHandles:
    @fast
    @given(
        raw=st.text(max_size=200)
        | st.lists(path_like, min_size=3, max_size=5).map("#".join)
        | st.lists(path_like, min_size=3, max_size=3).map("/".join)
    )
    @example("10.0.0.4#exports#..##")
    @example("10.0.0.4#exports#a/../../b##archive")
    @example("10.0.0.4/exports/..")
    @example("10.0.0.4#..#x##")
    def test_any_string_reads_as_nothing_or_as_a_directory_strictly_inside_its_share(self, raw: str) -> None:
        volume = CsiDriverNfsVolumeId.parse(raw)
        if volume is None:
            return
        assert str(volume) == raw and volume.subdir
        assert join_inside(volume.share.share, volume.subdir).startswith(volume.share.share.rstrip("/") + "/")
        assert ".." not in volume.subdir.split("/") and ".." not in volume.share.share.split("/")
        assert join_inside(volume.share.share, volume.archive_subdir).startswith(volume.share.share.rstrip("/") + "/")
        assert ExportPath.parse(volume.source) is not None

    @fast
    @given(server=hostname | ipv4 | ipv6, share=share, subdir=subdir, other=subdir)
    def test_a_source_matches_its_own_spellings_and_never_another_directory(
        self, server: str, share: str, subdir: str, other: str
    ) -> None:
        try:
            ref, normal, different = ShareRef.parse(server, share), relative_subpath(subdir, "s"), relative_subpath(other, "s")
        except InvalidArgument:
            return
        spelled = ref.source(normal)
        assert ExportPath.parse(spelled) == ExportPath.parse(spelled.replace(":/", "://", 1) + "/")
        if different != normal:
            assert ExportPath.parse(ref.source(different)) != ExportPath.parse(spelled)


class TestPathContainment:
    @fast
    @given(value=path_like)
    @example("..")
    @example("a/../../b")
    @example("x" * 4096)
    def test_a_relative_path_that_is_accepted_stays_strictly_inside_any_base(self, value: str) -> None:
        try:
            normal = relative_subpath(value, "subDir")
        except InvalidArgument:
            return
        for base in ("/", "/srv/share", "/srv/share/"):
            joined = join_inside(base, normal)
            assert joined.startswith(base.rstrip("/") + "/") and joined != base.rstrip("/")
            assert posixpath.normpath(joined) == joined
        parts = normal.split("/")
        assert all(part not in ("", ".", "..") and not part.startswith(".") for part in parts)
        assert all(len(part.encode()) <= MAX_COMPONENT_BYTES for part in parts)
        assert "\x00" not in normal and "\\" not in normal

    @fast
    @given(value=path_like.map(lambda p: "/" + p) | path_like)
    def test_an_absolute_path_that_is_accepted_has_no_way_up(self, value: str) -> None:
        try:
            normal = absolute_path(value, "target_path")
        except InvalidArgument:
            return
        assert normal.startswith("/") and ".." not in normal.split("/") and "\x00" not in normal
        assert posixpath.normpath(normal).replace("//", "/") == normal
        assert len(normal.encode()) <= 4095

    @fast
    @given(base=st.sampled_from(["/srv", "/srv/share"]), value=path_like)
    def test_join_inside_never_returns_a_path_outside_or_equal_to_its_base(self, base: str, value: str) -> None:
        try:
            joined = join_inside(base, value)
        except InvalidArgument:
            return
        assert joined.startswith(base + "/")


class _AlwaysMounted(Mounter):
    """The share 'mounted' is a plain directory: the filesystem walk is real, only the mount is skipped."""

    def mount(self, source: str, target: str, options: Sequence[str]) -> None: ...
    def unmount(self, target: str) -> None: ...
    def is_mount_point(self, path: str) -> bool:
        return True
    def mounted_source(self, path: str) -> str | None:
        return path
    def is_stale(self, path: str) -> bool:
        return False
    def bind_mount(self, source: str, target: str, readonly: bool) -> None: ...
    def filesystem_usage(self, path: str) -> FilesystemUsage:
        raise NotImplementedError
    def make_target(self, path: str) -> bool:
        return False
    def remove_target(self, path: str) -> None: ...
    def check_ready(self) -> None: ...


def tree(root: Path) -> set[str]:
    return {str(p) for p in root.rglob("*")}


class TestContainmentOnDisk:
    @settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
    @given(value=path_like)
    def test_storage_never_creates_or_removes_anything_outside_the_share(self, value: str) -> None:
        with tempfile.TemporaryDirectory() as tmp:
            root = Path(tmp)
            outside = root / "outside"
            outside.mkdir()
            (outside / "keep").write_text("keep")
            files = MountedFileSystem(_AlwaysMounted(), str(root / "work"), fs_timeout=5)
            storage = FileShareStorage(files)
            share = ShareRef("h", "/e")
            mount_point = Path(files.mount_point(share))
            mount_point.mkdir(parents=True)
            before = tree(outside)
            try:
                subdir = relative_subpath(value, "subDir")
            except InvalidArgument:
                subdir = value  # the adapter is the last line: it must refuse raw input too
            for operation in (
                lambda: storage.create_volume_dir(share, subdir, 0o700),
                lambda: storage.exists(share, subdir),
                lambda: storage.remove_volume_dir(share, subdir),
            ):
                try:
                    operation()
                except (DomainError, OSError, ValueError):
                    pass
            assert tree(outside) == before
            created = tree(root) - before - {str(mount_point), str(mount_point.parent)} - {str(outside)}
            assert all(path.startswith(str(mount_point) + os.sep) for path in created), created
            storage.close()


def test_the_corpus_itself_is_refused_where_it_must_be() -> None:
    for value in ("..", "../..", "/abs", "a/../../b", "\x00", "a\\b", "x" * 4096):
        with pytest.raises(InvalidArgument):
            relative_subpath(value, "subDir")
