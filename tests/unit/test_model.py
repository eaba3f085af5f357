"""Value objects and lexical path rules."""

from __future__ import annotations

import pytest

from domain.errors import InvalidArgument
from domain.model import OnDelete, ShareRef, VolumeId, check_mount_option
from domain.paths import join_inside, relative_subpath


class TestVolumeId:
    @pytest.mark.parametrize(
        "server,share,subdir",
        [
            ("10.0.0.1", "/exports", "pvc-1"),
            ("[fd00::1]", "/", "ns/pvc#%weird"),
            ("nfs.example.com", "/srv/nfs/share", "a/b/c"),
        ],
    )
    def test_round_trips(self, server: str, share: str, subdir: str) -> None:
        volume_id = VolumeId(ShareRef.parse(server, share), subdir, OnDelete.ARCHIVE)
        assert VolumeId.parse(str(volume_id)) == volume_id

    @pytest.mark.parametrize(
        "raw",
        [
            "fake-vol-id-abc",
            "",
            "nfs1#10.0.0.1#/exports#pvc-1",
            "nfs2#10.0.0.1#/exports#pvc-1#delete",
            "nfs1#10.0.0.1#/exports#../etc#delete",
            "nfs1#10.0.0.1#/exports#%2E%2E#delete",
            "nfs1#10.0.0.1#exports#pvc#delete",
            "nfs1#a,b#/exports#pvc#delete",
            "nfs1#-o#/exports#pvc#delete",
            "nfs1#10.0.0.1#/exports#pvc#shred",
            "nfs1#10.0.0.1#/exports#p%76c#delete",  # not canonical: 'v' needs no escape
        ],
    )
    def test_malformed_or_foreign_ids_are_not_ours(self, raw: str) -> None:
        assert VolumeId.parse(raw) is None

    def test_source_joins_share_and_subdir(self) -> None:
        assert ShareRef.parse("h", "/").source("a") == "h:/a"
        assert ShareRef.parse("h", "/e/").source("a/b") == "h:/e/a/b"


class TestShareRef:
    @pytest.mark.parametrize("server", ["", "-x", "a b", "a,b", "a\x00", "a/b", "a:b"])
    def test_bad_servers_are_refused(self, server: str) -> None:
        with pytest.raises(InvalidArgument):
            ShareRef.parse(server, "/exports")

    @pytest.mark.parametrize("share", ["", "rel", "/a/../b", "/a,b", "/a b", "/-o", "/a\nb"])
    def test_bad_shares_are_refused(self, share: str) -> None:
        with pytest.raises(InvalidArgument):
            ShareRef.parse("h", share)

    def test_share_is_normalised(self) -> None:
        assert ShareRef.parse("h", "//exports//x/").share == "/exports/x"


class TestPaths:
    @pytest.mark.parametrize("value", ["", ".", "..", "../x", "a/..", "/abs", "a/./b", "a\x00b", "a,b", "a b", "a\\b"])
    def test_unsafe_relative_paths_are_refused(self, value: str) -> None:
        with pytest.raises(InvalidArgument):
            relative_subpath(value, "subDir")

    def test_a_nested_relative_path_is_kept(self) -> None:
        assert relative_subpath("a//b/", "subDir") == "a/b"

    def test_join_inside_refuses_the_base_itself(self) -> None:
        with pytest.raises(InvalidArgument):
            join_inside("/base", ".")
        assert join_inside("/base", "x/y") == "/base/x/y"


class TestMountOptions:
    @pytest.mark.parametrize("option", ["nfsvers=4.1", "hard", "rsize=1048576", "sec=krb5p", "noatime"])
    def test_allowlisted_options_pass(self, option: str) -> None:
        assert check_mount_option(option) == option

    @pytest.mark.parametrize("option", ["ro,exec", "bind", "x-systemd.automount", "", "a b", "exec=1,2", "-o"])
    def test_anything_else_is_refused(self, option: str) -> None:
        with pytest.raises(InvalidArgument):
            check_mount_option(option)
