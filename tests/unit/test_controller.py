"""Provision and delete, against fakes."""

from __future__ import annotations

import dataclasses

import pytest

from domain.errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound, OperationInFlight, OutOfRange
from domain.locks import VolumeLocks
from domain.model import AccessMode, CapacityRange, OnDelete, ShareRef, VolumeCapability, VolumeId
from domain.parameters import ProvisionDefaults
from domain.usecases.controller import (
    CreateVolume,
    CreateVolumeCommand,
    DeleteVolume,
    DeleteVolumeCommand,
    ValidateVolumeCapabilities,
    ValidateVolumeCapabilitiesCommand,
)
from ports.storage import Obstacle
from tests.fakes import FakeClock, FakeShareStorage

SHARE = ShareRef("nfs.example", "/exports")
PARAMS = {"server": "nfs.example", "share": "/exports"}
RWX = (VolumeCapability(AccessMode.MULTI_NODE_MULTI_WRITER),)
GIB = 1 << 30


@pytest.fixture
def delete(storage: FakeShareStorage, locks: VolumeLocks) -> DeleteVolume:
    return DeleteVolume(storage, locks, FakeClock())


def create(name: str = "pvc-1", capacity: int = GIB, **params: str) -> CreateVolumeCommand:
    return CreateVolumeCommand(name=name, capabilities=RWX, capacity=CapacityRange(capacity), parameters={**PARAMS, **params})


class TestProvision:
    def test_creates_the_directory_and_records_the_request(self, provision: CreateVolume, storage: FakeShareStorage) -> None:
        volume = provision(create())
        assert str(volume.volume_id) == "nfs1#nfs.example#/exports#pvc-1#delete"
        assert volume.capacity_bytes == GIB
        assert (SHARE, "pvc-1") in storage.dirs
        record = storage.records[(SHARE, "pvc-1")]
        assert (record.name, record.capacity_bytes, record.parameters["subDir"]) == ("pvc-1", GIB, "pvc-1")
        assert volume.context == {
            "server": "nfs.example", "share": "/exports", "subDir": "pvc-1", "capacityBytes": str(GIB)
        }

    def test_second_create_with_same_arguments_returns_the_same_volume(self, provision: CreateVolume) -> None:
        assert provision(create()) == provision(create())

    def test_same_name_with_a_larger_capacity_is_already_exists(self, provision: CreateVolume) -> None:
        provision(create(capacity=GIB))
        with pytest.raises(AlreadyExists):
            provision(create(capacity=2 * GIB))

    def test_same_name_with_a_range_that_admits_the_recorded_capacity_is_ok(self, provision: CreateVolume) -> None:
        first = provision(create(capacity=GIB))
        again = provision(CreateVolumeCommand("pvc-1", RWX, CapacityRange(GIB // 2, 2 * GIB), PARAMS))
        assert again.capacity_bytes == first.capacity_bytes == GIB

    def test_same_name_with_other_parameters_is_already_exists(self, provision: CreateVolume) -> None:
        provision(create())
        with pytest.raises(AlreadyExists):
            provision(create(mountPermissions="0777"))

    def test_another_name_resolving_to_the_same_directory_is_already_exists(self, provision: CreateVolume) -> None:
        provision(create("a", subDir="shared"))
        with pytest.raises(AlreadyExists, match="belongs to volume 'a'"):
            provision(create("b", subDir="shared"))

    def test_an_existing_directory_not_made_by_the_driver_is_never_adopted(
        self, provision: CreateVolume, storage: FakeShareStorage
    ) -> None:
        storage.create_volume_dir(SHARE, "data", None)
        with pytest.raises(AlreadyExists, match="not a volume of this driver"):
            provision(create(subDir="data"))
        assert (SHARE, "data") not in storage.records

    @pytest.mark.parametrize("planted", ["notes", "notes/a/pvc-1", "notes/a/.pvc-1.nfs-csi.json"])
    def test_anything_but_a_directory_in_the_way_is_failed_precondition_and_nothing_is_written(
        self, provision: CreateVolume, storage: FakeShareStorage, planted: str
    ) -> None:
        storage.planted[(SHARE, planted)] = "FIFO, socket or device"
        with pytest.raises(FailedPrecondition, match=f"'{planted}' on nfs.example:/exports is a FIFO"):
            provision(create(subDir="notes/a/pvc-1"))
        assert (storage.dirs, storage.records, storage.index) == ({}, {}, {})
        del storage.planted[(SHARE, planted)]  # moved away: the same request now succeeds
        assert provision(create(subDir="notes/a/pvc-1")).context["subDir"] == "notes/a/pvc-1"

    def test_something_planted_after_the_look_leaves_no_record_behind(self, locks: VolumeLocks) -> None:
        class PlantedMeanwhile(FakeShareStorage):
            def in_the_way(self, share: ShareRef, subdir: str) -> Obstacle | None:
                found = super().in_the_way(share, subdir)
                self.planted[(share, subdir)] = "symbolic link"
                return found

        storage = PlantedMeanwhile()
        with pytest.raises(FailedPrecondition):
            CreateVolume(storage, locks, ProvisionDefaults())(create())
        assert (storage.dirs, storage.records, storage.index) == ({}, {}, {})

    def test_a_volume_inside_another_volume_is_refused(self, provision: CreateVolume, storage: FakeShareStorage) -> None:
        provision(create("outer", subDir="team"))
        with pytest.raises(AlreadyExists, match="inside volume 'outer'"):
            provision(create("inner", subDir="team/inner"))
        assert (SHARE, "team/inner") not in storage.dirs

    def test_templates_fill_from_the_provisioner_metadata(self, provision: CreateVolume) -> None:
        volume = provision(
            CreateVolumeCommand(
                "pv-9",
                RWX,
                parameters={
                    **PARAMS,
                    "subDir": "${pvc.metadata.namespace}/${pvc.metadata.name}-${pv.metadata.name}",
                    "csi.storage.k8s.io/pvc/name": "data",
                    "csi.storage.k8s.io/pvc/namespace": "team-a",
                    "csi.storage.k8s.io/pv/name": "pv-9",
                },
            )
        )
        assert volume.volume_id.subdir == "team-a/data-pv-9"

    def test_mount_permissions_are_applied_and_returned(self, provision: CreateVolume, storage: FakeShareStorage) -> None:
        volume = provision(create(mountPermissions="0770"))
        assert storage.dirs[(SHARE, "pvc-1")] == 0o770
        assert volume.context["mountPermissions"] == "0770"

    def test_on_delete_policy_is_carried_in_the_volume_id(self, provision: CreateVolume) -> None:
        assert provision(create(onDelete="Archive")).volume_id.on_delete is OnDelete.ARCHIVE

    @pytest.mark.parametrize(
        "params",
        [
            {"subDir": "../x"},
            {"subDir": "/etc"},
            {"subDir": "a/../../x"},
            {"subDir": "${pvc.metadata.labels}"},
            {"subDir": "${pvc.metadata.name}"},  # provisioner metadata missing
            {"unknownKey": "1"},
            {"server": "-oexec"},
            {"server": "a,b"},
            {"share": "exports"},
            {"share": "/exports/../etc"},
            {"share": "/ex ports"},
            {"onDelete": "shred"},
            {"mountPermissions": "rwx"},
        ],
    )
    def test_bad_parameters_are_invalid_argument_and_change_nothing(
        self, provision: CreateVolume, storage: FakeShareStorage, params: dict[str, str]
    ) -> None:
        with pytest.raises(InvalidArgument):
            provision(create(**params))
        assert storage.dirs == {} and storage.records == {}

    @pytest.mark.parametrize(
        "command",
        [
            CreateVolumeCommand("", RWX, parameters=PARAMS),
            CreateVolumeCommand("pvc-1", (), parameters=PARAMS),
            CreateVolumeCommand("pvc-1", (VolumeCapability(AccessMode.SINGLE_NODE_WRITER, block=True),), parameters=PARAMS),
            CreateVolumeCommand("pvc-1", (VolumeCapability(AccessMode.UNKNOWN),), parameters=PARAMS),
            CreateVolumeCommand("a/b", RWX, parameters=PARAMS),
        ],
    )
    def test_bad_requests_are_invalid_argument(self, provision: CreateVolume, command: CreateVolumeCommand) -> None:
        with pytest.raises(InvalidArgument):
            provision(command)

    def test_limit_below_required_is_out_of_range(self) -> None:
        with pytest.raises(OutOfRange):
            CapacityRange(2 * GIB, GIB)

    def test_a_concurrent_create_of_the_same_volume_is_aborted(self, provision: CreateVolume, locks: VolumeLocks) -> None:
        with locks.hold("nfs1#nfs.example#/exports#pvc-1#delete"):
            with pytest.raises(OperationInFlight):
                provision(create())


class TestDelete:
    def test_removes_the_directory_and_its_record(
        self, provision: CreateVolume, delete: DeleteVolume, storage: FakeShareStorage
    ) -> None:
        volume = provision(create())
        delete(DeleteVolumeCommand(str(volume.volume_id)))
        assert storage.dirs == {} and storage.records == {}

    def test_second_delete_is_ok(self, provision: CreateVolume, delete: DeleteVolume) -> None:
        volume = provision(create())
        delete(DeleteVolumeCommand(str(volume.volume_id)))
        delete(DeleteVolumeCommand(str(volume.volume_id)))

    @pytest.mark.parametrize("volume_id", ["fake-vol-id-1", "nfs1#x#/e#../../etc#delete", "nfs1#x#/e#a#delete#extra"])
    def test_foreign_or_malformed_ids_are_ok_and_touch_nothing(
        self, delete: DeleteVolume, storage: FakeShareStorage, volume_id: str
    ) -> None:
        storage.create_volume_dir(SHARE, "keep", None)
        delete(DeleteVolumeCommand(volume_id))
        assert (SHARE, "keep") in storage.dirs

    def test_a_directory_without_a_record_is_left_untouched(self, delete: DeleteVolume, storage: FakeShareStorage) -> None:
        storage.create_volume_dir(SHARE, "important", None)
        delete(DeleteVolumeCommand(str(VolumeId(SHARE, "important", OnDelete.DELETE))))
        assert (SHARE, "important") in storage.dirs

    def test_archive_renames_with_a_timestamp(
        self, provision: CreateVolume, delete: DeleteVolume, storage: FakeShareStorage
    ) -> None:
        volume = provision(create(onDelete="archive", subDir="team/pvc-1"))
        delete(DeleteVolumeCommand(str(volume.volume_id)))
        assert (SHARE, "team/archived-pvc-1-20261124T120000Z") in storage.dirs
        assert (SHARE, "team/pvc-1") not in storage.dirs and storage.records == {}

    def test_retain_keeps_the_directory(self, provision: CreateVolume, delete: DeleteVolume, storage: FakeShareStorage) -> None:
        volume = provision(create(onDelete="retain"))
        delete(DeleteVolumeCommand(str(volume.volume_id)))
        assert (SHARE, "pvc-1") in storage.dirs and storage.records == {}

    @pytest.mark.parametrize("policy", ["delete", "archive", "retain"])
    def test_a_volume_whose_directory_was_replaced_is_forgotten_and_what_is_there_left_alone(
        self, provision: CreateVolume, delete: DeleteVolume, storage: FakeShareStorage, policy: str
    ) -> None:
        volume = provision(create(onDelete=policy))
        del storage.dirs[(SHARE, "pvc-1")]
        storage.planted[(SHARE, "pvc-1")] = "symbolic link"
        delete(DeleteVolumeCommand(str(volume.volume_id)))
        assert (storage.records, storage.index, storage.dirs) == ({}, {}, {})
        assert storage.planted == {(SHARE, "pvc-1"): "symbolic link"}

    @pytest.mark.parametrize("recorded, sent", [("retain", "delete"), ("archive", "delete"), ("delete", "archive")])
    def test_an_id_with_another_policy_than_its_record_is_refused_and_touches_nothing(
        self, provision: CreateVolume, delete: DeleteVolume, storage: FakeShareStorage, recorded: str, sent: str
    ) -> None:
        volume = provision(create(onDelete=recorded))
        edited = VolumeId(SHARE, "pvc-1", OnDelete(sent))
        with pytest.raises(FailedPrecondition, match=f"created with onDelete '{recorded}'"):
            delete(DeleteVolumeCommand(str(edited)))
        assert (SHARE, "pvc-1") in storage.dirs and (SHARE, "pvc-1") in storage.records
        delete(DeleteVolumeCommand(str(volume.volume_id)))
        assert storage.records == {}

    def test_archive_never_renames_onto_anything_already_there(
        self, provision: CreateVolume, delete: DeleteVolume, storage: FakeShareStorage
    ) -> None:
        volume = provision(create(onDelete="archive"))
        storage.planted[(SHARE, "archived-pvc-1-20261124T120000Z")] = "regular file"
        delete(DeleteVolumeCommand(str(volume.volume_id)))
        assert (SHARE, "archived-pvc-1-20261124T120000Z-1") in storage.dirs

    def test_empty_id_is_invalid_argument(self, delete: DeleteVolume) -> None:
        with pytest.raises(InvalidArgument):
            delete(DeleteVolumeCommand(""))

    def test_lock_is_released_after_a_failure(self, provision: CreateVolume, locks: VolumeLocks, storage: FakeShareStorage) -> None:
        storage.create_volume_dir(SHARE, "x", None)
        with pytest.raises(AlreadyExists):
            provision(create(subDir="x"))
        assert locks.held() == frozenset()


class TestValidateVolumeCapabilities:
    @pytest.fixture
    def validate(self, storage: FakeShareStorage) -> ValidateVolumeCapabilities:
        return ValidateVolumeCapabilities(storage, ProvisionDefaults())

    def test_confirms_supported_capabilities_of_a_recorded_volume(
        self, provision: CreateVolume, validate: ValidateVolumeCapabilities
    ) -> None:
        volume = provision(create())
        result = validate(ValidateVolumeCapabilitiesCommand(str(volume.volume_id), RWX, context=volume.context, parameters=PARAMS))
        assert result.confirmed

    def test_the_pv_attributes_kubernetes_adds_to_the_context_are_ignored(
        self, provision: CreateVolume, validate: ValidateVolumeCapabilities
    ) -> None:
        volume = provision(create())
        context = {**volume.context, "storage.kubernetes.io/csiProvisionerIdentity": "1767225600000-9216-x"}
        assert validate(ValidateVolumeCapabilitiesCommand(str(volume.volume_id), RWX, context=context)).confirmed

    def test_a_context_from_before_an_expansion_is_confirmed_and_one_claiming_more_is_not(
        self, provision: CreateVolume, validate: ValidateVolumeCapabilities, storage: FakeShareStorage
    ) -> None:
        volume = provision(create())
        record = storage.records[(SHARE, "pvc-1")]
        storage.records[(SHARE, "pvc-1")] = dataclasses.replace(record, capacity_bytes=2 * record.capacity_bytes)
        assert validate(ValidateVolumeCapabilitiesCommand(str(volume.volume_id), RWX, context=volume.context)).confirmed
        more = {**volume.context, "capacityBytes": str(4 * record.capacity_bytes)}
        assert not validate(ValidateVolumeCapabilitiesCommand(str(volume.volume_id), RWX, context=more)).confirmed

    def test_block_is_not_confirmed_and_says_why(self, provision: CreateVolume, validate: ValidateVolumeCapabilities) -> None:
        volume = provision(create())
        result = validate(ValidateVolumeCapabilitiesCommand(str(volume.volume_id), (VolumeCapability(AccessMode.SINGLE_NODE_WRITER, block=True),)))
        assert not result.confirmed and "block" in result.message

    def test_other_parameters_are_not_confirmed(self, provision: CreateVolume, validate: ValidateVolumeCapabilities) -> None:
        volume = provision(create())
        assert not validate(ValidateVolumeCapabilitiesCommand(str(volume.volume_id), RWX, parameters={**PARAMS, "onDelete": "retain"})).confirmed

    @pytest.mark.parametrize("volume_id", ["fake-vol-id-1", "nfs1#nfs.example#/exports#never-made#delete"])
    def test_a_missing_volume_is_not_found(self, validate: ValidateVolumeCapabilities, volume_id: str) -> None:
        with pytest.raises(NotFound):
            validate(ValidateVolumeCapabilitiesCommand(volume_id, RWX))

    def test_missing_fields_are_invalid_argument(self, provision: CreateVolume, validate: ValidateVolumeCapabilities) -> None:
        volume = provision(create())
        for command in (ValidateVolumeCapabilitiesCommand("", RWX), ValidateVolumeCapabilitiesCommand(str(volume.volume_id), ())):
            with pytest.raises(InvalidArgument):
                validate(command)


class TestValidateStaticVolumes:
    CONTEXT = {"server": "nfs.example", "share": "/exports", "subDir": "legacy"}

    @pytest.fixture
    def validate(self, storage: FakeShareStorage) -> ValidateVolumeCapabilities:
        storage.exports = {SHARE}
        return ValidateVolumeCapabilities(storage, ProvisionDefaults())

    def test_a_reachable_share_and_subdir_are_confirmed(self, validate: ValidateVolumeCapabilities, storage: FakeShareStorage) -> None:
        storage.create_volume_dir(SHARE, "legacy", None)
        assert validate(ValidateVolumeCapabilitiesCommand("admin-handle", RWX, context=self.CONTEXT)).confirmed

    @pytest.mark.parametrize("given", [{"parameters": {"\u2025": "\x7f"}}, {"parameters": PARAMS}, {"mutable_parameters": {"mountPermissions": "0775"}}])
    def test_parameters_it_never_saw_are_not_confirmed(
        self, validate: ValidateVolumeCapabilities, storage: FakeShareStorage, given: dict[str, dict[str, str]]
    ) -> None:
        storage.create_volume_dir(SHARE, "legacy", None)
        result = validate(ValidateVolumeCapabilitiesCommand("admin-handle", RWX, context=self.CONTEXT, **given))  # type: ignore[arg-type]
        assert not result.confirmed and "did not create has no parameters" in result.message

    def test_block_is_still_not_confirmed(self, validate: ValidateVolumeCapabilities, storage: FakeShareStorage) -> None:
        storage.create_volume_dir(SHARE, "legacy", None)
        block = (VolumeCapability(AccessMode.SINGLE_NODE_WRITER, block=True),)
        assert not validate(ValidateVolumeCapabilitiesCommand("admin-handle", block, context=self.CONTEXT)).confirmed

    @pytest.mark.parametrize(
        "context",
        [{}, {"server": "nfs.example", "share": "/exports", "subDir": "missing"}, {"server": "nfs.example", "share": "/other"}],
    )
    def test_no_share_a_missing_subdir_or_an_unexported_share_is_not_found(
        self, validate: ValidateVolumeCapabilities, context: dict[str, str]
    ) -> None:
        with pytest.raises(NotFound):
            validate(ValidateVolumeCapabilitiesCommand("admin-handle", RWX, context=context))
