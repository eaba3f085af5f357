"""List, get, capacity, expand and modify, against fakes."""

from __future__ import annotations

from typing import Mapping

import pytest

from domain.errors import (
    AlreadyExists,
    DeadlineExceeded,
    FailedPrecondition,
    InvalidArgument,
    InvalidToken,
    NotFound,
    OperationInFlight,
    OutOfRange,
    Unavailable,
)
from domain.locks import VolumeLocks
from domain.model import AccessMode, CapacityRange, ShareRef, VolumeCapability, VolumeId
from domain.parameters import ProvisionDefaults
from domain.usecases.controller import (
    CreateVolume,
    CreateVolumeCommand,
    DeleteVolume,
    DeleteVolumeCommand,
    ValidateVolumeCapabilities,
    ValidateVolumeCapabilitiesCommand,
)
from domain.usecases.snapshots import ContentSource
from domain.usecases.volumes import (
    ControllerExpandVolume,
    ControllerExpandVolumeCommand,
    ControllerGetVolume,
    ControllerGetVolumeCommand,
    ControllerModifyVolume,
    ControllerModifyVolumeCommand,
    GetCapacity,
    GetCapacityCommand,
    ListVolumes,
    ListVolumesCommand,
    VolumeView,
)
from tests.fakes import FakeClock, FakeShareStorage

SHARE = ShareRef("nfs.example", "/exports")
OTHER = ShareRef("nfs.example", "/other")
PARAMS = {"server": "nfs.example", "share": "/exports"}
RWX = (VolumeCapability(AccessMode.MULTI_NODE_MULTI_WRITER),)
BLOCK = VolumeCapability(AccessMode.SINGLE_NODE_WRITER, block=True)
GIB = 1 << 30


def make(
    provision: CreateVolume, name: str, share: str = "/exports", mutable_parameters: Mapping[str, str] = {}
) -> str:
    command = CreateVolumeCommand(
        name=name,
        capabilities=RWX,
        capacity=CapacityRange(GIB),
        parameters={**PARAMS, "share": share},
        mutable_parameters=mutable_parameters,
    )
    return str(provision(command).volume_id)


def listed_ids(volumes: tuple[VolumeView, ...]) -> list[str]:
    return [str(volume.volume_id) for volume in volumes]


class TestListVolumes:
    def test_lists_every_recorded_volume_of_the_configured_shares_oldest_first(
        self, storage: FakeShareStorage, provision: CreateVolume
    ) -> None:
        ids = [make(provision, "a"), make(provision, "b", "/other"), make(provision, "c")]
        page = ListVolumes(storage, (SHARE, OTHER))(ListVolumesCommand())
        assert listed_ids(page.volumes) == [ids[0], ids[2], ids[1]]
        assert page.next_token == ""
        first = page.volumes[0]
        assert first.capacity_bytes == GIB
        assert first.context == {"server": "nfs.example", "share": "/exports", "subDir": "a", "capacityBytes": str(GIB)}
        assert not first.condition.abnormal

    def test_a_share_not_configured_is_not_listed(self, storage: FakeShareStorage, provision: CreateVolume) -> None:
        make(provision, "a", "/other")
        assert ListVolumes(storage, (SHARE,))(ListVolumesCommand()).volumes == ()
        assert ListVolumes(storage, ())(ListVolumesCommand()).volumes == ()

    def test_pages_through_every_volume_once_across_shares(
        self, storage: FakeShareStorage, provision: CreateVolume
    ) -> None:
        ids = {make(provision, f"v{i}", "/exports" if i % 2 else "/other") for i in range(7)}
        listing = ListVolumes(storage, (SHARE, OTHER))
        seen: list[str] = []
        page = listing(ListVolumesCommand(max_entries=2))
        while True:
            assert len(page.volumes) <= 2
            seen += listed_ids(page.volumes)
            if not page.next_token:
                break
            page = listing(ListVolumesCommand(max_entries=2, starting_token=page.next_token))
        assert sorted(seen) == sorted(ids)

    def test_a_full_last_page_has_no_token(self, storage: FakeShareStorage, provision: CreateVolume) -> None:
        make(provision, "a")
        make(provision, "b")
        assert ListVolumes(storage, (SHARE,))(ListVolumesCommand(max_entries=2)).next_token == ""

    def test_a_token_survives_the_deletion_of_its_volume_and_new_volumes_follow_it(
        self, storage: FakeShareStorage, provision: CreateVolume, locks: VolumeLocks
    ) -> None:
        ids = [make(provision, name) for name in ("a", "b", "c")]
        listing = ListVolumes(storage, (SHARE,))
        first = listing(ListVolumesCommand(max_entries=2))
        delete = DeleteVolume(storage, locks, FakeClock())
        for volume_id in listed_ids(first.volumes):
            delete(DeleteVolumeCommand(volume_id))
        added = make(provision, "d")
        rest = listing(ListVolumesCommand(max_entries=2, starting_token=first.next_token))
        assert listed_ids(rest.volumes) == [ids[2], added]

    @pytest.mark.parametrize(
        "token",
        # "$" matched before a final newline, and \d matched any Unicode digit (int() reads "\u0660" as 0)
        ["invalid-token", "9.1.abc", "0.x.abc", "0.1.", "0.1.a/b", "0.1.a.b", "0.1.abc\n", "\u0660.1.abc", "0.\u0661.abc"],
    )
    def test_a_token_it_did_not_hand_out_is_invalid(self, storage: FakeShareStorage, token: str) -> None:
        with pytest.raises(InvalidToken):
            ListVolumes(storage, (SHARE,))(ListVolumesCommand(starting_token=token))

    def test_negative_max_entries_is_invalid(self, storage: FakeShareStorage) -> None:
        with pytest.raises(InvalidArgument):
            ListVolumes(storage, (SHARE,))(ListVolumesCommand(max_entries=-1))

    def test_a_volume_whose_directory_is_gone_is_listed_abnormal(
        self, storage: FakeShareStorage, provision: CreateVolume
    ) -> None:
        make(provision, "a")
        storage.remove_volume_dir(SHARE, "a")
        (view,) = ListVolumes(storage, (SHARE,))(ListVolumesCommand()).volumes
        assert view.condition.abnormal and "missing" in view.condition.message

    def test_an_unreachable_share_fails_the_listing(self, storage: FakeShareStorage, provision: CreateVolume) -> None:
        make(provision, "a")
        storage.exports = {SHARE}
        with pytest.raises(Unavailable):
            ListVolumes(storage, (SHARE, OTHER))(ListVolumesCommand())

    def test_the_listed_id_is_the_one_create_returned(self, storage: FakeShareStorage, provision: CreateVolume) -> None:
        created = make(provision, "a")
        (view,) = ListVolumes(storage, (SHARE,))(ListVolumesCommand()).volumes
        assert str(view.volume_id) == created
        assert ControllerGetVolume(storage)(ControllerGetVolumeCommand(created)).volume_id == view.volume_id


class TestGetVolume:
    def test_returns_the_recorded_volume_as_normal(self, storage: FakeShareStorage, provision: CreateVolume) -> None:
        volume_id = make(provision, "a")
        view = ControllerGetVolume(storage)(ControllerGetVolumeCommand(volume_id))
        assert (str(view.volume_id), view.capacity_bytes, view.condition.abnormal) == (volume_id, GIB, False)
        assert view.condition.message

    def test_a_deleted_directory_is_abnormal(self, storage: FakeShareStorage, provision: CreateVolume) -> None:
        volume_id = make(provision, "a")
        storage.remove_volume_dir(SHARE, "a")
        view = ControllerGetVolume(storage)(ControllerGetVolumeCommand(volume_id))
        assert view.condition.abnormal and "'a' is missing" in view.condition.message

    def test_an_unreachable_share_is_abnormal_not_missing(
        self, storage: FakeShareStorage, provision: CreateVolume
    ) -> None:
        volume_id = make(provision, "a")
        storage.exports = set()
        view = ControllerGetVolume(storage)(ControllerGetVolumeCommand(volume_id))
        assert view.condition.abnormal and "cannot be reached" in view.condition.message

    def test_a_clone_whose_content_is_not_in_place_is_abnormal_in_get_and_list(
        self, storage: FakeShareStorage, provision: CreateVolume
    ) -> None:
        source = make(provision, "a")
        storage.files[(SHARE, "a/f1")], storage.files[(SHARE, "a/f2")] = b"1", b"2"
        storage.fail_next_fill = DeadlineExceeded("copy took too long")
        with pytest.raises(DeadlineExceeded):
            provision(
                CreateVolumeCommand(name="copy", capabilities=RWX, parameters=PARAMS, content_source=ContentSource("volume", source))
            )
        copy_id = "nfs1#nfs.example#/exports#copy#delete"
        view = ControllerGetVolume(storage)(ControllerGetVolumeCommand(copy_id))
        assert view.condition.abnormal and "still being filled from volume:" in view.condition.message
        listed = {str(v.volume_id): v.condition for v in ListVolumes(storage, (SHARE,))(ListVolumesCommand()).volumes}
        assert listed[copy_id].abnormal and not listed[source].abnormal

    @pytest.mark.parametrize("volume_id", ["fake-vol-id-1", "nfs1#nfs.example#/exports#gone#delete"])
    def test_a_missing_volume_is_not_found(self, storage: FakeShareStorage, volume_id: str) -> None:
        with pytest.raises(NotFound):
            ControllerGetVolume(storage)(ControllerGetVolumeCommand(volume_id))

    def test_an_empty_id_is_invalid(self, storage: FakeShareStorage) -> None:
        with pytest.raises(InvalidArgument):
            ControllerGetVolume(storage)(ControllerGetVolumeCommand(""))


class TestGetCapacity:
    def test_is_what_the_named_share_has_free(self, storage: FakeShareStorage) -> None:
        storage.free = {SHARE: 7 * GIB, OTHER: 1}
        assert GetCapacity(storage, ProvisionDefaults())(GetCapacityCommand(RWX, {**PARAMS, "onDelete": "retain"})) == 7 * GIB

    def test_without_parameters_is_zero(self, storage: FakeShareStorage) -> None:
        storage.free = {SHARE: 7 * GIB}
        assert GetCapacity(storage, ProvisionDefaults())(GetCapacityCommand((), {})) == 0

    @pytest.mark.parametrize("params", [{"server": "nfs.example"}, {**PARAMS, "bogus": "1"}, {**PARAMS, "share": "a/../b"}])
    def test_parameters_create_volume_would_refuse_are_invalid(
        self, storage: FakeShareStorage, params: dict[str, str]
    ) -> None:
        with pytest.raises(InvalidArgument):
            GetCapacity(storage, ProvisionDefaults())(GetCapacityCommand(RWX, params))
        with pytest.raises(InvalidArgument):  # even with a capability no volume can have: every field is checked
            GetCapacity(storage, ProvisionDefaults())(GetCapacityCommand((BLOCK,), params))

    def test_no_capacity_for_a_block_capability(self, storage: FakeShareStorage) -> None:
        """The spec asks for capacity usable by volumes with ALL the capabilities given: none can be block here."""
        storage.free[SHARE] = 5 * GIB
        assert GetCapacity(storage, ProvisionDefaults())(GetCapacityCommand((BLOCK,), PARAMS)) == 0
        assert GetCapacity(storage, ProvisionDefaults())(GetCapacityCommand(RWX, PARAMS)) == 5 * GIB

    def test_an_unreachable_share_is_unavailable(self, storage: FakeShareStorage) -> None:
        storage.exports = set()
        with pytest.raises(Unavailable):
            GetCapacity(storage, ProvisionDefaults())(GetCapacityCommand(RWX, PARAMS))


class TestAClonePendingIsNoVolumeYet:
    def test_expand_and_modify_answer_not_found_and_change_nothing(
        self, storage: FakeShareStorage, provision: CreateVolume, locks: VolumeLocks
    ) -> None:
        source = make(provision, "a")
        storage.files[(SHARE, "a/f1")], storage.files[(SHARE, "a/f2")] = b"1", b"2"
        storage.fail_next_fill = DeadlineExceeded("copy took too long")
        with pytest.raises(DeadlineExceeded):
            provision(
                CreateVolumeCommand(name="copy", capabilities=RWX, parameters=PARAMS, content_source=ContentSource("volume", source))
            )
        copy_id, before = "nfs1#nfs.example#/exports#copy#delete", storage.records[(SHARE, "copy")]
        with pytest.raises(NotFound):
            ControllerExpandVolume(storage, locks)(ControllerExpandVolumeCommand(copy_id, CapacityRange(3 * GIB)))
        with pytest.raises(NotFound):
            ControllerModifyVolume(storage, locks)(ControllerModifyVolumeCommand(copy_id, {"mountPermissions": "0700"}))
        assert storage.records[(SHARE, "copy")] == before


class TestExpandVolume:
    @pytest.fixture
    def expand(self, storage: FakeShareStorage, locks: VolumeLocks) -> ControllerExpandVolume:
        return ControllerExpandVolume(storage, locks)

    def test_records_the_new_size_and_asks_the_nodes_to_learn_it(
        self, expand: ControllerExpandVolume, storage: FakeShareStorage, provision: CreateVolume
    ) -> None:
        volume_id = make(provision, "a")
        expanded = expand(ControllerExpandVolumeCommand(volume_id, CapacityRange(3 * GIB)))
        assert (expanded.capacity_bytes, expanded.node_expansion_required) == (3 * GIB, True)
        assert storage.records[(SHARE, "a")].capacity_bytes == 3 * GIB
        assert expand(ControllerExpandVolumeCommand(volume_id, CapacityRange(3 * GIB))).capacity_bytes == 3 * GIB

    def test_a_size_at_or_below_the_current_one_is_ok_and_changes_nothing(
        self, expand: ControllerExpandVolume, storage: FakeShareStorage, provision: CreateVolume
    ) -> None:
        volume_id = make(provision, "a")
        assert expand(ControllerExpandVolumeCommand(volume_id, CapacityRange(GIB // 2))).capacity_bytes == GIB
        assert expand(ControllerExpandVolumeCommand(volume_id, CapacityRange(0, 2 * GIB))).capacity_bytes == GIB
        assert storage.records[(SHARE, "a")].capacity_bytes == GIB

    def test_a_limit_below_the_current_size_is_out_of_range(
        self, expand: ControllerExpandVolume, storage: FakeShareStorage, provision: CreateVolume
    ) -> None:
        volume_id = make(provision, "a")
        with pytest.raises(OutOfRange):
            expand(ControllerExpandVolumeCommand(volume_id, CapacityRange(0, GIB // 2)))
        with pytest.raises(OutOfRange):
            expand(ControllerExpandVolumeCommand(volume_id, CapacityRange(3 * GIB, 2 * GIB)))
        assert storage.records[(SHARE, "a")].capacity_bytes == GIB

    @pytest.mark.parametrize("volume_id", ["fake-vol-id-1", "nfs1#nfs.example#/exports#gone#delete"])
    def test_a_missing_volume_is_not_found(self, expand: ControllerExpandVolume, volume_id: str) -> None:
        with pytest.raises(NotFound):
            expand(ControllerExpandVolumeCommand(volume_id, CapacityRange(GIB)))

    def test_no_id_no_range_or_a_block_capability_is_invalid(
        self, expand: ControllerExpandVolume, provision: CreateVolume
    ) -> None:
        volume_id = make(provision, "a")
        for command in (
            ControllerExpandVolumeCommand("", CapacityRange(GIB)),
            ControllerExpandVolumeCommand(volume_id, None),
            ControllerExpandVolumeCommand(volume_id, CapacityRange(2 * GIB), BLOCK),
        ):
            with pytest.raises(InvalidArgument):
                expand(command)

    def test_a_busy_volume_is_aborted(self, expand: ControllerExpandVolume, locks: VolumeLocks, provision: CreateVolume) -> None:
        volume_id = make(provision, "a")
        with locks.hold(volume_id), pytest.raises(OperationInFlight):
            expand(ControllerExpandVolumeCommand(volume_id, CapacityRange(2 * GIB)))


class TestModifyVolume:
    @pytest.fixture
    def modify(self, storage: FakeShareStorage, locks: VolumeLocks) -> ControllerModifyVolume:
        return ControllerModifyVolume(storage, locks)

    def test_mount_permissions_are_applied_at_once_and_recorded(
        self, modify: ControllerModifyVolume, storage: FakeShareStorage, provision: CreateVolume
    ) -> None:
        volume_id = make(provision, "a")
        modify(ControllerModifyVolumeCommand(volume_id, {"mountpermissions": "775"}))
        assert storage.dirs[(SHARE, "a")] == 0o775
        record = storage.records[(SHARE, "a")]
        assert record.mutable_parameters == {"mountPermissions": "0775"}
        assert record.parameters["mountPermissions"] == "0000"  # what CreateVolume compares never changes

    def test_a_create_retried_after_a_modify_keeps_the_modified_mode(
        self, modify: ControllerModifyVolume, storage: FakeShareStorage, provision: CreateVolume
    ) -> None:
        volume_id = make(provision, "a")
        modify(ControllerModifyVolumeCommand(volume_id, {"mountPermissions": "0700"}))
        assert make(provision, "a") == volume_id
        assert storage.dirs[(SHARE, "a")] == 0o700

    @pytest.mark.parametrize(
        "params",
        [{"XXX_FakeKey": "x"}, {"mountPermissions": "0775", "mountOptions": "hard"}, {"mountPermissions": "999"},
         {"mountPermissions": "0"}, {"mountPermissions": "0775", "MOUNTPERMISSIONS": "0700"}],
    )  # fmt: skip
    def test_an_unsupported_key_or_bad_value_is_invalid_and_nothing_is_applied(
        self, modify: ControllerModifyVolume, storage: FakeShareStorage, provision: CreateVolume, params: dict[str, str]
    ) -> None:
        volume_id = make(provision, "a")
        before = (dict(storage.dirs), dict(storage.records))
        with pytest.raises(InvalidArgument):
            modify(ControllerModifyVolumeCommand(volume_id, params))
        assert (storage.dirs, storage.records) == before

    @pytest.mark.parametrize("volume_id", ["non-existing-volume-id", "nfs1#nfs.example#/exports#gone#delete"])
    def test_a_missing_volume_is_not_found(self, modify: ControllerModifyVolume, volume_id: str) -> None:
        with pytest.raises(NotFound):
            modify(ControllerModifyVolumeCommand(volume_id, {"mountPermissions": "0775"}))

    def test_a_missing_directory_is_a_failed_precondition_and_is_not_recreated(
        self, modify: ControllerModifyVolume, storage: FakeShareStorage, provision: CreateVolume
    ) -> None:
        volume_id = make(provision, "a")
        storage.remove_volume_dir(SHARE, "a")
        with pytest.raises(FailedPrecondition):
            modify(ControllerModifyVolumeCommand(volume_id, {"mountPermissions": "0775"}))
        assert (SHARE, "a") not in storage.dirs
        assert storage.records[(SHARE, "a")].mutable_parameters == {}

    def test_no_parameters_is_ok_and_changes_nothing(
        self, modify: ControllerModifyVolume, storage: FakeShareStorage, provision: CreateVolume
    ) -> None:
        volume_id = make(provision, "a")
        before = dict(storage.records)
        modify(ControllerModifyVolumeCommand(volume_id, {}))
        assert storage.records == before


class TestOwner:
    @pytest.fixture
    def modify(self, storage: FakeShareStorage, locks: VolumeLocks) -> ControllerModifyVolume:
        return ControllerModifyVolume(storage, locks)

    def test_create_gives_the_directory_the_owner_and_records_it(self, storage: FakeShareStorage, provision: CreateVolume) -> None:
        provision(CreateVolumeCommand("a", RWX, CapacityRange(GIB), {**PARAMS, "uid": "1000", "GID": "2000"}))
        assert storage.owners[(SHARE, "a")] == (1000, 2000)
        assert (storage.records[(SHARE, "a")].parameters["uid"], storage.records[(SHARE, "a")].parameters["gid"]) == (
            "1000", "2000"
        )

    def test_one_part_alone_leaves_the_other_as_it_is(self, storage: FakeShareStorage, provision: CreateVolume) -> None:
        provision(CreateVolumeCommand("a", RWX, CapacityRange(GIB), {**PARAMS, "gid": "65534"}))
        assert storage.owners[(SHARE, "a")] == (0, 65534) and "uid" not in storage.records[(SHARE, "a")].parameters

    def test_no_owner_asked_is_no_chown_and_the_record_is_as_before(self, storage: FakeShareStorage, provision: CreateVolume) -> None:
        make(provision, "a")
        assert storage.owners == {} and set(storage.records[(SHARE, "a")].parameters) == {
            "server", "share", "subDir", "onDelete", "mountPermissions"
        }

    @pytest.mark.parametrize(
        "params",
        [{"uid": "-1"}, {"uid": "2147483648"}, {"gid": "1e3"}, {"uid": "0x10"}, {"uid": "1 000"},
         {"uid": "12345678901"}, {"uid": "1", "UID": "2"}, {"gid": "٣"}],
    )  # fmt: skip
    def test_a_bad_owner_is_invalid_and_makes_nothing(
        self, storage: FakeShareStorage, provision: CreateVolume, params: dict[str, str]
    ) -> None:
        with pytest.raises(InvalidArgument):
            provision(CreateVolumeCommand("a", RWX, CapacityRange(GIB), {**PARAMS, **params}))
        assert storage.dirs == {} and storage.records == {} and storage.owners == {}

    def test_an_empty_owner_is_not_given_as_every_empty_parameter(
        self, storage: FakeShareStorage, provision: CreateVolume
    ) -> None:
        # csi-driver-nfs's StorageClasses leave keys empty; an empty value is no value, for uid and gid too.
        provision(CreateVolumeCommand("a", RWX, CapacityRange(GIB), {**PARAMS, "gid": ""}))
        assert storage.owners == {} and "gid" not in storage.records[(SHARE, "a")].parameters

    def test_a_refused_owner_fails_the_create_and_leaves_nothing(self, storage: FakeShareStorage, provision: CreateVolume) -> None:
        storage.refuse_chown = True
        with pytest.raises(FailedPrecondition, match="no_root_squash.*--nfs-uid 0"):
            provision(CreateVolumeCommand("a", RWX, CapacityRange(GIB), {**PARAMS, "uid": "1000"}))
        assert storage.dirs == {} and storage.records == {} and storage.index == {}

    def test_a_retry_with_another_owner_is_already_exists(self, storage: FakeShareStorage, provision: CreateVolume) -> None:
        provision(CreateVolumeCommand("a", RWX, CapacityRange(GIB), {**PARAMS, "uid": "1000"}))
        with pytest.raises(AlreadyExists):
            provision(CreateVolumeCommand("a", RWX, CapacityRange(GIB), {**PARAMS, "uid": "1001"}))
        assert storage.owners[(SHARE, "a")] == (1000, 0)

    def test_modify_changes_the_owner_at_once_keeping_the_mode_and_a_create_retry_keeps_it(
        self, modify: ControllerModifyVolume, storage: FakeShareStorage, provision: CreateVolume
    ) -> None:
        params = {**PARAMS, "uid": "1000", "gid": "1000", "mountPermissions": "2770"}
        volume_id = str(provision(CreateVolumeCommand("a", RWX, CapacityRange(GIB), params)).volume_id)
        modify(ControllerModifyVolumeCommand(volume_id, {"gid": "3000"}))
        assert storage.owners[(SHARE, "a")] == (1000, 3000) and storage.dirs[(SHARE, "a")] == 0o2770
        assert storage.records[(SHARE, "a")].mutable_parameters == {"gid": "3000"}
        provision(CreateVolumeCommand("a", RWX, CapacityRange(GIB), params))
        assert storage.owners[(SHARE, "a")] == (1000, 3000)

    def test_every_key_is_checked_before_any_is_applied(
        self, modify: ControllerModifyVolume, storage: FakeShareStorage, provision: CreateVolume
    ) -> None:
        volume_id = make(provision, "a")
        with pytest.raises(InvalidArgument):
            modify(ControllerModifyVolumeCommand(volume_id, {"uid": "1000", "mountPermissions": "0775", "gid": "x"}))
        assert storage.owners == {} and storage.dirs[(SHARE, "a")] is None
        assert storage.records[(SHARE, "a")].mutable_parameters == {}

    def test_a_refused_owner_on_modify_is_failed_precondition_and_nothing_is_recorded(
        self, modify: ControllerModifyVolume, storage: FakeShareStorage, provision: CreateVolume
    ) -> None:
        volume_id = make(provision, "a")
        storage.refuse_chown = True
        with pytest.raises(FailedPrecondition):
            modify(ControllerModifyVolumeCommand(volume_id, {"uid": "1000"}))
        assert storage.records[(SHARE, "a")].mutable_parameters == {}

    def test_validate_confirms_the_same_owner_and_not_another(self, storage: FakeShareStorage, provision: CreateVolume) -> None:
        validate = ValidateVolumeCapabilities(storage, ProvisionDefaults())
        params = {**PARAMS, "uid": "1000"}
        volume_id = str(provision(CreateVolumeCommand("a", RWX, CapacityRange(GIB), params)).volume_id)
        assert validate(ValidateVolumeCapabilitiesCommand(volume_id, RWX, parameters=params)).confirmed
        other = validate(ValidateVolumeCapabilitiesCommand(volume_id, RWX, parameters={**params, "uid": "1001"}))
        assert not other.confirmed and "owner" in other.message
        assert validate(ValidateVolumeCapabilitiesCommand(volume_id, RWX, mutable_parameters={"gid": "5"})).confirmed


class TestMutableParametersAtCreation:
    def test_create_applies_and_records_them(self, storage: FakeShareStorage, provision: CreateVolume) -> None:
        make(provision, "a", mutable_parameters={"mountPermissions": "0750"})
        assert storage.dirs[(SHARE, "a")] == 0o750
        assert storage.records[(SHARE, "a")].mutable_parameters == {"mountPermissions": "0750"}

    def test_create_with_an_unsupported_one_is_invalid_and_makes_nothing(
        self, storage: FakeShareStorage, provision: CreateVolume
    ) -> None:
        with pytest.raises(InvalidArgument):
            make(provision, "a", mutable_parameters={"XXX_FakeKey": "XXX_FakeValue"})
        assert storage.dirs == {} and storage.records == {}


class TestValidateMutableParameters:
    @pytest.fixture
    def validate(self, storage: FakeShareStorage) -> ValidateVolumeCapabilities:
        return ValidateVolumeCapabilities(storage, ProvisionDefaults())

    def test_supported_ones_are_confirmed(self, validate: ValidateVolumeCapabilities, provision: CreateVolume) -> None:
        volume_id = make(provision, "a")
        assert validate(ValidateVolumeCapabilitiesCommand(volume_id, RWX, mutable_parameters={"mountPermissions": "0775"})).confirmed

    def test_an_unsupported_one_is_not_confirmed_with_the_reason(
        self, validate: ValidateVolumeCapabilities, provision: CreateVolume
    ) -> None:
        volume_id = make(provision, "a")
        result = validate(ValidateVolumeCapabilitiesCommand(volume_id, RWX, mutable_parameters={"mountOptions": "hard"}))
        assert not result.confirmed and "mountOptions" in result.message

    def test_block_is_never_confirmed(self, validate: ValidateVolumeCapabilities, provision: CreateVolume) -> None:
        volume_id = make(provision, "a")
        assert not validate(ValidateVolumeCapabilitiesCommand(volume_id, (BLOCK,))).confirmed

    def test_a_missing_volume_is_not_found(self, validate: ValidateVolumeCapabilities) -> None:
        with pytest.raises(NotFound):
            validate(ValidateVolumeCapabilitiesCommand(str(VolumeId(SHARE, "gone", ProvisionDefaults().on_delete)), RWX))
