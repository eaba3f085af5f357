"""The options the controller reaches each share with: parsed, checked, and told to both storage modes."""

from __future__ import annotations

import pytest

from adapters.storage.userspace import NfsClientOptions, client_options
from app.settings import parse
from domain.errors import InvalidArgument, MountFailed
from domain.locks import VolumeLocks
from domain.model import AccessMode, CapacityRange, MountOptionAllowlist, ShareRef, VolumeCapability, parse_share_mount_options
from domain.parameters import ProvisionDefaults
from domain.usecases.controller import CreateVolume, CreateVolumeCommand
from tests.fakes import FakeShareStorage

SHARE = ShareRef("nfs.example", "/exports")
OTHER = ShareRef("[fd00::1]", "/data")


class TestParse:
    def test_each_share_gets_its_options(self) -> None:
        parsed = parse_share_mount_options(" nfs.example:/exports = vers=3 , port=2050 ; [fd00::1]:/data=xprtsec=tls;; ")
        assert parsed == {SHARE: ("vers=3", "port=2050"), OTHER: ("xprtsec=tls",)}

    def test_empty_is_none(self) -> None:
        assert parse_share_mount_options("") == {} and parse_share_mount_options(" ; ") == {}

    @pytest.mark.parametrize(
        "text",
        ["nfs.example:/exports", "nfs.example=vers=3", "nfs.example:/exports=", "nfs.example:/exports=vers=3,ro",
         "nfs.example:/exports=vers=3;nfs.example:/exports/=hard", "nfs.example:/exports=bogus",
         "nfs.example:/exports=vers=3\nport=1", "-o:/exports=vers=3", "nfs.example:/exports/../etc=hard",
         "nfs.example:/exports=" + ",".join(["hard"] * 65), "nfs.example:/exports=hard;" * 5000],
    )  # fmt: skip
    def test_anything_malformed_or_off_the_allowlist_is_refused(self, text: str) -> None:
        with pytest.raises(InvalidArgument):
            parse_share_mount_options(text)

    def test_the_configured_allowlist_decides(self) -> None:
        with pytest.raises(InvalidArgument, match="allowlist"):
            parse_share_mount_options("nfs.example:/exports=vers=3", MountOptionAllowlist.parse("hard"))


class TestSettings:
    def test_the_flag_reaches_the_settings_in_order(self) -> None:
        settings = parse(["--share-mount-options", "nfs.example:/exports=vers=3,port=2050"])
        assert settings.share_mount_options == ((SHARE, ("vers=3", "port=2050")),)

    @pytest.mark.parametrize(
        "value", ["nfs.example:/exports=sec=krb5p", "nfs.example:/exports=xprtsec=mtls", "nfs.example:/exports=vers=4.2",
                  "nfs.example:/exports=proto=udp", "nfs.example:/exports=port=70000"],
    )  # fmt: skip
    def test_what_the_userspace_client_cannot_speak_stops_it_at_start(
        self, value: str, capsys: pytest.CaptureFixture[str]
    ) -> None:
        with pytest.raises(SystemExit):
            parse(["--storage", "userspace", "--share-mount-options", value])
        assert "--share-mount-options: share nfs.example:/exports" in capsys.readouterr().err
        parse(["--share-mount-options", value.replace("port=70000", "port=7000")])  # the kernel's client may


class TestUserspaceClientOptions:
    BASE = NfsClientOptions(versions=("4.1",), port=None)

    @pytest.mark.parametrize(
        ("options", "versions"),
        [(("vers=3",), ("3",)), (("nfsvers=4",), ("4.1", "4.0")), (("vers=4", "minorversion=0"), ("4.0",)),
         (("minorversion=1",), ("4.1",)), (("vers=4.0",), ("4.0",)), (("hard",), ("4.1",))],
    )  # fmt: skip
    def test_versions_follow_vers_and_minorversion(self, options: tuple[str, ...], versions: tuple[str, ...]) -> None:
        assert client_options(self.BASE, options)[0].versions == versions

    def test_ports_and_reserved_ports_override_the_flags_and_tuning_options_are_set_aside(self) -> None:
        options, ignored = client_options(
            self.BASE, ("port=2050", "mountport=0", "resvport", "sec=sys", "xprtsec=none", "hard", "timeo=600")
        )
        assert (options.port, options.mount_port, options.reserved_port) == (2050, None, True)
        assert options.versions == ("4.1",) and ignored == ("hard", "timeo=600")

    @pytest.mark.parametrize(
        "option", ["sec=krb5", "sec=krb5i", "xprtsec=tls", "proto=rdma", "mountproto=udp", "vers=2", "port=x"]
    )
    def test_what_it_cannot_honour_is_refused(self, option: str) -> None:
        with pytest.raises(ValueError):
            client_options(self.BASE, (option,))

    def test_disagreeing_versions_are_refused(self) -> None:
        with pytest.raises(ValueError, match="disagree"):
            client_options(self.BASE, ("vers=4.1", "minorversion=0"))


class _ShareThatWillNotMount(FakeShareStorage):
    def read_record(self, share: ShareRef, subdir: str) -> None:
        raise MountFailed("mount nfs.example:/exports failed (exit 32): access denied")


class TestCreateVolumeHint:
    def test_a_share_that_will_not_mount_names_the_classes_mount_options_as_the_flag_would_take_them(self) -> None:
        create = CreateVolume(_ShareThatWillNotMount(), VolumeLocks(), ProvisionDefaults())
        capability = VolumeCapability(AccessMode.MULTI_NODE_MULTI_WRITER, mount_flags=("vers=3", "ro", "port=2050"))
        command = CreateVolumeCommand(
            "pvc-1", (capability,), CapacityRange(1), {"server": "nfs.example", "share": "/exports"}
        )
        with pytest.raises(MountFailed) as failed:
            create(command)
        assert "access denied" in str(failed.value)
        assert "--share-mount-options 'nfs.example:/exports=vers=3,port=2050'" in str(failed.value)

    def test_without_mount_options_the_error_is_the_mounts_own(self) -> None:
        create = CreateVolume(_ShareThatWillNotMount(), VolumeLocks(), ProvisionDefaults())
        command = CreateVolumeCommand(
            "pvc-1", (VolumeCapability(AccessMode.MULTI_NODE_MULTI_WRITER),), CapacityRange(1),
            {"server": "nfs.example", "share": "/exports"},
        )
        with pytest.raises(MountFailed, match="^mount nfs.example:/exports failed .* access denied$"):
            create(command)
