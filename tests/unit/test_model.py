"""Value objects and lexical path rules."""

from __future__ import annotations

import pytest

import threading

from domain.errors import InvalidArgument, OperationInFlight
from domain.locks import VolumeLocks
from domain.model import (
    CsiDriverNfsVolumeId,
    ExportPath,
    MountOptionAllowlist,
    OnDelete,
    ShareRef,
    VolumeId,
    check_mount_option,
    check_volume_name,
    mount_option_allowlist,
    parse_share_list,
    source_named_by,
)
from domain.parameters import PVC_NAME, Owner, ProvisionDefaults, VolumeParameters, parse_id, parse_mode, parse_mutable
from domain.paths import absolute_path, join_inside, relative_subpath
from domain.snapshot_model import SnapshotParameters
from domain.static import ContextVolume


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

    def test_an_ipv6_address_without_brackets_gets_them(self) -> None:
        assert ShareRef.parse("fd00::1", "/e").server == "[fd00::1]"
        assert ShareRef.parse("fd00::1", "/e").source("v") == "[fd00::1]:/e/v"


class TestCsiDriverNfsVolumeId:
    @pytest.mark.parametrize(
        "handle,server,share,subdir,uuid,on_delete",
        [
            # v4.4 and later, as its CreateVolume writes them: empty fields kept, onDelete only for retain and archive
            ("10.0.0.4#exports#pvc-1f2e##", "10.0.0.4", "/exports", "pvc-1f2e", "", None),
            ("nfs.example#srv/nfs#ns/data#pvc-9#retain", "nfs.example", "/srv/nfs", "ns/data", "pvc-9", OnDelete.RETAIN),
            ("nfs.example#exports#pvc-2##Archive", "nfs.example", "/exports", "pvc-2", "", OnDelete.ARCHIVE),
            ("nfs.example##pvc-3##", "nfs.example", "/", "pvc-3", "", None),  # share "/"
            ("fd00::4#exports#pvc-4##", "[fd00::4]", "/exports", "pvc-4", "", None),  # IPv6 gets its brackets
            ("[fd00::4]#exports#pvc-4##delete", "[fd00::4]", "/exports", "pvc-4", "", OnDelete.DELETE),
            # v4.1 (four fields) and v3 (three)
            ("10.0.0.4#exports#data#pvc-5", "10.0.0.4", "/exports", "data", "pvc-5", None),
            ("10.0.0.4#exports#pvc-6", "10.0.0.4", "/exports", "pvc-6", "", None),
            # the first format: server/baseDir/subDir, baseDir any depth, subDir the last name
            ("10.0.0.4/exports/pvc-7", "10.0.0.4", "/exports", "pvc-7", "", None),
            ("10.0.0.4/srv/nfs/pvc-8", "10.0.0.4", "/srv/nfs", "pvc-8", "", None),
        ],
    )
    def test_reads_every_format_csi_driver_nfs_wrote(
        self, handle: str, server: str, share: str, subdir: str, uuid: str, on_delete: OnDelete | None
    ) -> None:
        parsed = CsiDriverNfsVolumeId.parse(handle)
        assert parsed is not None
        assert (parsed.share, parsed.subdir, parsed.uuid, parsed.on_delete) == (ShareRef(server, share), subdir, uuid, on_delete)
        assert str(parsed) == handle

    @pytest.mark.parametrize(
        "handle",
        [
            "10.0.0.4#exports#..##",  # CVE-2026-3864
            "10.0.0.4#exports#a/../../etc##",
            "10.0.0.4#exports/..#pvc##",
            "10.0.0.4#exports#/etc##",  # csi-driver-nfs trims slashes: an absolute subDir was never written
            "10.0.0.4#exports###",  # no subDir: the share's root
            "10.0.0.4#exports#.##",
            "10.0.0.4#exports#a\x00b##",
            "10.0.0.4#exports#a\nb##",
            "10.0.0.4#exports#a b##",
            "10.0.0.4#exports#a,ro##",
            "10.0.0.4,sec=none#exports#pvc##",
            "-o#exports#pvc##",
            "#exports#pvc##",
            " 10.0.0.4#exports#pvc##",
            "10.0.0.4#exports#pvc##shred",  # an onDelete it never wrote: not guessed
            "10.0.0.4#exports#pvc#../x#",
            "10.0.0.4#exports#pvc#a#retain#extra",
            "10.0.0.4#exports",
            "nfs-server.default.svc.cluster.local/share##",  # its static example: a label, not a volume
            "team-a/legacy-share-01",
            "h/exports/..",
            "fake-vol-id-abc",
            "",
            "h#exports#" + "d/" * 600 + "##",
        ],
    )
    def test_a_handle_breaking_a_path_rule_is_none(self, handle: str) -> None:
        assert CsiDriverNfsVolumeId.parse(handle) is None

    def test_an_id_of_ours_is_never_read_as_theirs(self) -> None:
        assert CsiDriverNfsVolumeId.parse("nfs1#10.0.0.4#/exports#pvc-1#delete") is None

    def test_its_archive_is_archived_dash_subdir_at_the_share_root(self) -> None:
        parsed = CsiDriverNfsVolumeId.parse("h#exports#ns/team/pvc-1##archive")
        assert parsed is not None and parsed.archive_subdir == "archived-ns/team/pvc-1"

    def test_the_source_a_handle_names(self) -> None:
        assert source_named_by("10.0.0.4#exports/#ns/pvc-1##") == "10.0.0.4:/exports/ns/pvc-1"
        assert source_named_by("nfs1#10.0.0.4#/exports#pvc-1#delete") == "10.0.0.4:/exports/pvc-1"
        assert source_named_by("fd00::4#exports#pvc##") == "[fd00::4]:/exports/pvc"
        assert source_named_by("any-static-handle") is None


class TestExportPath:
    @pytest.mark.parametrize(
        "one,other",
        [
            ("10.0.0.4:/exports/pvc-1", "10.0.0.4:/exports/pvc-1/"),
            ("10.0.0.4:/exports/pvc-1", "10.0.0.4://exports//pvc-1"),
            ("[fd00::4]:/exports/pvc", "[fd00:0:0::4]:/exports/pvc"),
            ("NFS.example.:/e", "nfs.example:/e"),
            ("h:/", "h://"),
        ],
    )
    def test_two_spellings_of_one_export_are_equal(self, one: str, other: str) -> None:
        assert ExportPath.parse(one) is not None and ExportPath.parse(one) == ExportPath.parse(other)

    @pytest.mark.parametrize(
        "one,other",
        [
            ("10.0.0.4:/exports/pvc-1", "10.0.0.4:/exports/pvc-10"),  # a prefix is another directory
            ("10.0.0.4:/exports/pvc-1", "10.0.0.4:/exports"),
            ("10.0.0.4:/exports/pvc-1", "10.0.0.4:/exports/pvc-1/sub"),
            ("10.0.0.4:/exports/pvc-1", "10.0.0.5:/exports/pvc-1"),
            ("10.0.0.4:/exports/pvc-1", "nfs.example:/exports/pvc-1"),  # names are never resolved
            ("h:/Exports", "h:/exports"),  # paths are case-sensitive
        ],
    )
    def test_different_exports_or_directories_differ(self, one: str, other: str) -> None:
        assert ExportPath.parse(one) != ExportPath.parse(other)

    @pytest.mark.parametrize("source", ["/dev/vda1", "tmpfs", "overlay", "h:rel", "h:/a/../b", "h:/a/./b", "[zz]:/x", ":/x", "[fd00::1]/x"])
    def test_what_is_no_nfs_source_is_none(self, source: str) -> None:
        assert ExportPath.parse(source) is None


class TestShareList:
    def test_parses_deduplicates_and_keeps_order(self) -> None:
        shares = parse_share_list(" b:/x, [fd00::1]:/exports/a ,b:/x/,")
        assert shares == (ShareRef("b", "/x"), ShareRef("[fd00::1]", "/exports/a"))

    def test_empty_is_no_shares(self) -> None:
        assert parse_share_list("") == ()

    @pytest.mark.parametrize("value", ["host", "host:rel", "-o:/x", "h:/a/../b", ":/x"])
    def test_bad_entries_are_refused(self, value: str) -> None:
        with pytest.raises(InvalidArgument):
            parse_share_list(value)


class TestPaths:
    @pytest.mark.parametrize(
        "value",
        [
            "", ".", "..", "../x", "a/..", "/abs", "a/./b", "a\x00b", "a,b", "a b", "a\\b",
            ".hidden", "a/.snapshot", "a\u200bb", "a\u202eb", "a\u2028b", "x" * 201, "a/" * 600,
        ],
    )  # fmt: skip
    def test_unsafe_relative_paths_are_refused(self, value: str) -> None:
        with pytest.raises(InvalidArgument):
            relative_subpath(value, "subDir")

    def test_a_nested_relative_path_is_kept(self) -> None:
        assert relative_subpath("a//b/", "subDir") == "a/b"

    @pytest.mark.parametrize("value", ["%2e%2e", "\uff0e\uff0e", "\u2024\u2024", "caf\u00e9", "a..b", "x" * 200])
    def test_names_that_only_look_like_a_way_up_are_plain_names(self, value: str) -> None:
        assert join_inside("/base", relative_subpath(value, "subDir")) == f"/base/{value}"

    @pytest.mark.parametrize("value", ["/", "//a//b/", "/var/lib/kubelet/pods/x/mount"])
    def test_absolute_paths_are_normalised(self, value: str) -> None:
        assert absolute_path(value, "target_path") == (value.replace("//", "/").rstrip("/") or "/")

    @pytest.mark.parametrize("value", ["rel", "/a/../b", "/a\x00", "/" + "x" * 256, "/x" * 2100, "/a\u200b"])
    def test_bad_absolute_paths_are_refused(self, value: str) -> None:
        with pytest.raises(InvalidArgument):
            absolute_path(value, "target_path")

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

    def test_the_allowlist_is_configurable(self) -> None:
        allowlist = mount_option_allowlist("hard, nfsvers")
        assert allowlist.check("nfsvers=4.2") == "nfsvers=4.2"
        with pytest.raises(InvalidArgument, match="allowlist"):
            allowlist.check("noac")
        assert mount_option_allowlist("") == MountOptionAllowlist()

    def test_a_malformed_allowlist_is_refused(self) -> None:
        with pytest.raises(InvalidArgument):
            mount_option_allowlist("hard,bad name")


CONTROL_EDGES = ["\n", "\r\n", "\r", "\t", "\x0b", "\x00", "\x1b"]


def edged(value: str, edge: str) -> list[str]:
    return [value + edge, edge + value]


class TestNoValueIsTrimmedIntoValidity:
    """Python's '$' matches before a final newline and strip() hides the rest: a value is valid as sent, or refused."""

    @pytest.mark.parametrize("edge", [*CONTROL_EDGES, " "])
    def test_a_mount_option(self, edge: str) -> None:
        for option in (*edged("vers=4.1", edge), *edged("hard", edge)):
            with pytest.raises(InvalidArgument, match="malformed"):
                check_mount_option(option)

    @pytest.mark.parametrize("edge", CONTROL_EDGES)
    def test_a_mount_option_in_a_volume_context(self, edge: str) -> None:
        for options in edged("hard", edge):
            with pytest.raises(InvalidArgument, match="malformed"):
                ContextVolume.from_context({"server": "h", "share": "/e", "mountOptions": f"{options},nfsvers=4.1"})

    @pytest.mark.parametrize("edge", CONTROL_EDGES)
    def test_an_option_name_of_the_allowlist(self, edge: str) -> None:
        for name in edged("hard", edge):
            with pytest.raises(InvalidArgument, match="letters, digits"):
                mount_option_allowlist(f"{name},ro")

    def test_spaces_around_the_entries_of_a_list_are_still_fine(self) -> None:
        assert mount_option_allowlist(" hard , ro").names == {"hard", "ro"}
        assert ContextVolume.from_context({"server": "h", "share": "/e", "mountOptions": "hard, nfsvers=4.1"}) is not None

    @pytest.mark.parametrize("edge", [*CONTROL_EDGES, " "])
    def test_a_server(self, edge: str) -> None:
        for server in (*edged("127.0.0.1", edge), *edged("nfs.example.com", edge), *edged("[fd00::1]", edge)):
            with pytest.raises(InvalidArgument, match="host name or IP address"):
                ShareRef.parse(server, "/exports")

    @pytest.mark.parametrize("edge", [*CONTROL_EDGES, " "])
    def test_an_on_delete_policy(self, edge: str) -> None:
        for policy in edged("retain", edge):
            with pytest.raises(InvalidArgument, match="onDelete"):
                OnDelete.parse(policy)

    @pytest.mark.parametrize("edge", [*CONTROL_EDGES, " "])
    def test_a_mode(self, edge: str) -> None:
        for mode in edged("0770", edge):
            with pytest.raises(InvalidArgument, match="octal mode"):
                parse_mode(mode, "mountPermissions")
            with pytest.raises(InvalidArgument, match="octal mode"):
                VolumeParameters.parse({"server": "h", "share": "/e", "mountPermissions": mode}, ProvisionDefaults())
            with pytest.raises(InvalidArgument, match="octal mode"):
                parse_mutable({"mountPermissions": mode})

    @pytest.mark.parametrize("edge", [*CONTROL_EDGES, " "])
    def test_a_uid_or_gid(self, edge: str) -> None:
        for value in [*edged("1000", edge), "+1000", "-0"]:
            with pytest.raises(InvalidArgument, match="must be a number"):
                parse_id(value, "uid")
            for key in ("uid", "gid"):
                with pytest.raises(InvalidArgument, match="must be a number"):
                    VolumeParameters.parse({"server": "h", "share": "/e", key: value}, ProvisionDefaults())
                with pytest.raises(InvalidArgument, match="must be a number"):
                    parse_mutable({key: value})

    @pytest.mark.parametrize("edge", [*CONTROL_EDGES, " "])
    def test_a_snapshot_format(self, edge: str) -> None:
        for fmt in edged("tar", edge):
            with pytest.raises(InvalidArgument, match="format"):
                SnapshotParameters.parse({"format": fmt})

    @pytest.mark.parametrize("edge", CONTROL_EDGES)
    def test_a_listed_share(self, edge: str) -> None:
        with pytest.raises(InvalidArgument):
            parse_share_list(f"127.0.0.1{edge}:/exports")
        with pytest.raises(InvalidArgument):
            parse_share_list(f"127.0.0.1:/exports{edge}")

    def test_what_was_accepted_before_still_is(self) -> None:
        assert OnDelete.parse("Retain") is OnDelete.RETAIN
        assert parse_mode("0770", "mode") == 0o770
        assert parse_id("0", "uid") == 0 and parse_id("1000", "uid") == 1000
        assert SnapshotParameters.parse({"format": "TAR"}).format == "tar"
        assert ShareRef.parse("[fd00::1]", "/e").server == "[fd00::1]"


class TestEmptyAndRepeatedParameters:
    """An empty value is "not given" (csi-driver-nfs's StorageClasses leave some empty), in a StorageClass and a
    VolumeSnapshotClass alike; two spellings of one key are refused whichever of them is empty."""

    @pytest.mark.parametrize("first, second", [("uid", "UID"), ("subDir", "subdir"), ("onDelete", "ONDELETE")])
    @pytest.mark.parametrize("empty", ["first", "second"])
    def test_a_key_given_twice_is_refused_even_when_one_spelling_is_empty(self, first: str, second: str, empty: str) -> None:
        values = {"uid": "7", "UID": "7", "subDir": "d", "subdir": "d", "onDelete": "retain", "ONDELETE": "retain"}
        raw = {"server": "h", "share": "/e", first: values[first], second: values[second]}
        raw[first if empty == "first" else second] = ""
        with pytest.raises(InvalidArgument, match="given twice"):
            VolumeParameters.parse(raw, ProvisionDefaults())

    def test_empty_storage_class_values_are_not_given(self) -> None:
        params = VolumeParameters.parse({"server": "h", "share": "/e", "uid": "", "gid": "", "onDelete": ""}, ProvisionDefaults())
        assert params.owner == Owner() and params.on_delete is ProvisionDefaults().on_delete

    def test_empty_snapshot_class_values_are_not_given(self) -> None:
        assert SnapshotParameters.parse({"server": "", "share": "", "format": ""}) == SnapshotParameters()
        with pytest.raises(InvalidArgument, match="together"):
            SnapshotParameters.parse({"server": "", "share": "/e"})
        with pytest.raises(InvalidArgument, match="given twice"):
            SnapshotParameters.parse({"format": "", "FORMAT": "tar"})


class TestNames:
    @pytest.mark.parametrize("name", ["", "a\x00b", "a\nb", "x" * 129, "é" * 65, "a,b", "a\u200bb"])
    def test_bad_names_are_refused(self, name: str) -> None:
        with pytest.raises(InvalidArgument):
            check_volume_name(name)

    def test_names_up_to_the_spec_s_128_bytes_are_accepted(self) -> None:
        """One limit, the one the gRPC layer also holds: a name the wire lets through is never refused here."""
        assert check_volume_name("p" * 128) == "p" * 128 and check_volume_name("é" * 64) == "é" * 64


class TestTemplates:
    def resolve(self, template: str, value: str) -> str:
        params = VolumeParameters.parse({"server": "h", "share": "/e", "subDir": template}, ProvisionDefaults())
        return params.resolve_subdir("pvc-1", {PVC_NAME: value})

    @pytest.mark.parametrize(
        "template,value",
        [("${pvc.metadata.name}", ".."), ("x/${pvc.metadata.name}", "a/b"), ("${pvc.metadata.name}", ".hidden"),
         ("${pvc.metadata.name", "v"), ("${pvc.spec}", "v"), ("${pvc.metadata.name}", "a\x00")],
    )  # fmt: skip
    def test_a_template_cannot_leave_the_share_or_smuggle_anything(self, template: str, value: str) -> None:
        with pytest.raises(InvalidArgument):
            self.resolve(template, value)

    def test_a_filled_template_names_a_directory_below_the_share(self) -> None:
        assert self.resolve("team/${pvc.metadata.name}", "data") == "team/data"


class TestVolumeLocks:
    def test_a_second_hold_of_any_held_key_is_refused_and_takes_none(self) -> None:
        locks = VolumeLocks()
        with locks.hold("name:a", "id:x"):
            with pytest.raises(OperationInFlight):
                with locks.hold("id:x", "name:b"):
                    pass
            assert locks.held() == frozenset({"name:a", "id:x"})
        assert locks.held() == frozenset()

    def test_keys_are_released_by_an_exception(self) -> None:
        locks = VolumeLocks()
        with pytest.raises(TimeoutError):
            with locks.hold("k"):
                raise TimeoutError("a bound ran out")
        with locks.hold("k"):
            pass

    def test_at_once_exactly_one_caller_holds_a_key(self) -> None:
        locks, start, results = VolumeLocks(), threading.Barrier(8), []

        def call() -> None:
            start.wait()
            try:
                with locks.hold("k"):
                    results.append("held")
                    threading.Event().wait(0.05)
            except OperationInFlight:
                results.append("aborted")

        threads = [threading.Thread(target=call) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert sorted(results) == ["aborted"] * 7 + ["held"]
