"""Taking over from csi-driver-nfs on the controller: its volumes deleted, archived or retained only when the
operator says so, and described by ControllerGetVolume, ValidateVolumeCapabilities and ControllerExpandVolume."""

from __future__ import annotations

import logging

import pytest

from domain.errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound
from domain.events import Event
from domain.locks import VolumeLocks
from domain.model import AccessMode, CapacityRange, OnDelete, ShareRef, VolumeCapability, VolumeRecord
from domain.parameters import CsiDriverNfsVolumes, ProvisionDefaults, VolumeParameters
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
)
from tests.fakes import FakeClock, FakeShareStorage, RecordingEvents

SHARE = ShareRef("10.0.0.4", "/exports")
RWX = (VolumeCapability(AccessMode.MULTI_NODE_MULTI_WRITER),)
MANAGED = CsiDriverNfsVolumes(manage=True)


@pytest.fixture
def events() -> RecordingEvents:
    return RecordingEvents()


def deleter(storage: FakeShareStorage, events: RecordingEvents, theirs: CsiDriverNfsVolumes = MANAGED) -> DeleteVolume:
    return DeleteVolume(storage, VolumeLocks(), FakeClock(), events, theirs)


def their_volume(storage: FakeShareStorage, subdir: str, *files: str) -> None:
    """A directory as csi-driver-nfs's CreateVolume leaves it: made under the share, no record beside it."""
    storage.create_volume_dir(SHARE, subdir, 0o777)
    for name in files:
        storage.files[(SHARE, f"{subdir}/{name}")] = b"their data"


def tree(storage: FakeShareStorage) -> set[str]:
    return {subdir for share, subdir in storage.dirs if share == SHARE}


class TestDeleteWithoutOptIn:
    @pytest.mark.parametrize("handle", ["10.0.0.4#exports#pvc-1##", "10.0.0.4#exports#pvc-1##archive", "10.0.0.4/exports/pvc-1"])
    def test_ok_nothing_touched_and_one_line_saying_why(
        self, storage: FakeShareStorage, events: RecordingEvents, caplog: pytest.LogCaptureFixture, handle: str
    ) -> None:
        their_volume(storage, "pvc-1", "data.txt")
        with caplog.at_level(logging.INFO):
            deleter(storage, events, CsiDriverNfsVolumes())(DeleteVolumeCommand(handle))
        assert tree(storage) == {"pvc-1"} and (SHARE, "pvc-1/data.txt") in storage.files
        assert events.events == []
        (line,) = [r.getMessage() for r in caplog.records]
        assert "csi-driver-nfs" in line and "--manage-csi-driver-nfs-volumes" in line


class TestDeleteTheirVolume:
    def test_an_empty_on_delete_is_their_default_delete_and_the_parent_stays(
        self, storage: FakeShareStorage, events: RecordingEvents
    ) -> None:
        their_volume(storage, "ns/pvc-1", "data.txt")
        their_volume(storage, "ns/pvc-2")
        deleter(storage, events)(DeleteVolumeCommand("10.0.0.4#exports#ns/pvc-1#pvc-1#"))
        assert tree(storage) == {"ns", "ns/pvc-2"} and storage.files == {}
        assert events.events == [Event.VOLUME_DELETED]

    def test_an_empty_parent_is_kept_too_unlike_csi_driver_nfs(self, storage: FakeShareStorage, events: RecordingEvents) -> None:
        their_volume(storage, "ns/pvc-1")
        deleter(storage, events)(DeleteVolumeCommand("10.0.0.4#exports#ns/pvc-1#pvc-1#"))
        assert tree(storage) == {"ns"}

    def test_the_default_for_an_empty_on_delete_is_the_operators(self, storage: FakeShareStorage, events: RecordingEvents) -> None:
        their_volume(storage, "pvc-1")
        deleter(storage, events, CsiDriverNfsVolumes(True, OnDelete.RETAIN))(DeleteVolumeCommand("10.0.0.4#exports#pvc-1##"))
        assert tree(storage) == {"pvc-1"} and events.events == [Event.VOLUME_RETAINED]

    @pytest.mark.parametrize("on_delete", ["retain", "Retain"])
    def test_retain_keeps_everything(self, storage: FakeShareStorage, events: RecordingEvents, on_delete: str) -> None:
        their_volume(storage, "pvc-1", "data.txt")
        deleter(storage, events)(DeleteVolumeCommand(f"10.0.0.4#exports#pvc-1##{on_delete}"))
        assert tree(storage) == {"pvc-1"} and events.events == [Event.VOLUME_RETAINED]

    @pytest.mark.parametrize("on_delete", ["archive", "ARCHIVE"])
    def test_archive_moves_it_to_archived_subdir_at_the_share_root_with_parents_made(
        self, storage: FakeShareStorage, events: RecordingEvents, on_delete: str
    ) -> None:
        their_volume(storage, "ns/team/pvc-1", "data.txt")
        delete = deleter(storage, events)
        delete(DeleteVolumeCommand(f"10.0.0.4#exports#ns/team/pvc-1#pvc-1#{on_delete}"))
        assert tree(storage) == {"ns", "ns/team", "archived-ns", "archived-ns/team", "archived-ns/team/pvc-1"}
        assert storage.files == {(SHARE, "archived-ns/team/pvc-1/data.txt"): b"their data"}
        delete(DeleteVolumeCommand(f"10.0.0.4#exports#ns/team/pvc-1#pvc-1#{on_delete}"))  # the provisioner's retry
        assert events.events == [Event.VOLUME_ARCHIVED]

    def test_an_archive_already_there_is_failed_precondition_and_nothing_moves(
        self, storage: FakeShareStorage, events: RecordingEvents
    ) -> None:
        their_volume(storage, "pvc-1", "new.txt")
        their_volume(storage, "archived-pvc-1", "old.txt")
        with pytest.raises(FailedPrecondition, match="--csi-driver-nfs-remove-archived-volume-path"):
            deleter(storage, events)(DeleteVolumeCommand("10.0.0.4#exports#pvc-1##archive"))
        assert set(storage.files) == {(SHARE, "pvc-1/new.txt"), (SHARE, "archived-pvc-1/old.txt")}

    def test_with_remove_archived_the_old_archive_is_replaced(self, storage: FakeShareStorage, events: RecordingEvents) -> None:
        their_volume(storage, "pvc-1", "new.txt")
        their_volume(storage, "archived-pvc-1", "old.txt")
        theirs = CsiDriverNfsVolumes(manage=True, remove_archived=True)
        deleter(storage, events, theirs)(DeleteVolumeCommand("10.0.0.4#exports#pvc-1##archive"))
        assert set(storage.files) == {(SHARE, "archived-pvc-1/new.txt")}

    @pytest.mark.parametrize("handle", ["10.0.0.4#exports#pvc-1##", "10.0.0.4#exports#pvc-1", "10.0.0.4/exports/pvc-1"])
    def test_every_format_deletes_and_a_second_delete_is_ok(
        self, storage: FakeShareStorage, events: RecordingEvents, handle: str
    ) -> None:
        their_volume(storage, "pvc-1")
        deleter(storage, events)(DeleteVolumeCommand(handle))
        deleter(storage, events)(DeleteVolumeCommand(handle))
        assert tree(storage) == set() and events.events == [Event.VOLUME_DELETED]


class TestDeleteTouchesNothingOfOurs:
    @pytest.mark.parametrize(
        "handle",
        [
            "10.0.0.4#exports#..##",
            "10.0.0.4#exports#pvc-1/../..##",
            "10.0.0.4#exports###",  # the share's root
            "10.0.0.4#exports#/pvc-1##",
            "10.0.0.4#exports#pvc-1##shred",
        ],
    )
    def test_a_handle_breaking_a_path_rule_is_ok_and_touches_nothing(
        self, storage: FakeShareStorage, events: RecordingEvents, handle: str
    ) -> None:
        their_volume(storage, "pvc-1", "data.txt")
        deleter(storage, events)(DeleteVolumeCommand(handle))
        assert tree(storage) == {"pvc-1"} and len(storage.files) == 1 and events.events == []

    def test_a_directory_with_our_record_is_failed_precondition(self, storage: FakeShareStorage, events: RecordingEvents) -> None:
        their_volume(storage, "pvc-1")
        storage.write_record(SHARE, "pvc-1", VolumeRecord("pvc-1", 0))
        with pytest.raises(FailedPrecondition, match="volume 'pvc-1' of this driver"):
            deleter(storage, events)(DeleteVolumeCommand("10.0.0.4#exports#pvc-1##"))
        assert tree(storage) == {"pvc-1"}

    def test_a_directory_inside_one_of_our_volumes_is_failed_precondition(
        self, storage: FakeShareStorage, events: RecordingEvents
    ) -> None:
        their_volume(storage, "ours/inner")
        storage.write_record(SHARE, "ours", VolumeRecord("ours", 0))
        with pytest.raises(FailedPrecondition, match="inside volume 'ours'"):
            deleter(storage, events)(DeleteVolumeCommand("10.0.0.4#exports#ours/inner##"))
        assert tree(storage) == {"ours", "ours/inner"}

    def test_a_directory_holding_one_of_our_volumes_is_failed_precondition(
        self, storage: FakeShareStorage, events: RecordingEvents
    ) -> None:
        their_volume(storage, "ns/pvc-ours")
        storage.write_record(SHARE, "ns/pvc-ours", VolumeRecord("pvc-ours", 0))
        with pytest.raises(FailedPrecondition, match="holds 'ns/pvc-ours'"):
            deleter(storage, events)(DeleteVolumeCommand("10.0.0.4#exports#ns#pvc-1#"))
        with pytest.raises(FailedPrecondition, match="holds 'ns/pvc-ours'"):
            deleter(storage, events)(DeleteVolumeCommand("10.0.0.4#exports#ns#pvc-1#archive"))
        assert tree(storage) == {"ns", "ns/pvc-ours"}

    def test_a_directory_that_is_a_share_of_this_driver_is_failed_precondition(
        self, storage: FakeShareStorage, events: RecordingEvents
    ) -> None:
        their_volume(storage, "exports/.nfs-csi/volumes")  # 10.0.0.4:/exports/exports is a share of this driver
        with pytest.raises(FailedPrecondition, match="a share of this driver"):
            deleter(storage, events)(DeleteVolumeCommand("10.0.0.4#exports#exports##"))
        assert "exports/.nfs-csi/volumes" in tree(storage)

    @pytest.mark.parametrize("subdir", [".nfs-csi", ".nfs-csi/snapshots", "ns/.hidden"])
    def test_a_hidden_name_is_failed_precondition(self, storage: FakeShareStorage, events: RecordingEvents, subdir: str) -> None:
        their_volume(storage, subdir)
        with pytest.raises(FailedPrecondition, match="starting with '.'"):
            deleter(storage, events)(DeleteVolumeCommand(f"10.0.0.4#exports#{subdir}##"))
        assert subdir in tree(storage)

    def test_an_archive_inside_one_of_our_volumes_is_failed_precondition(
        self, storage: FakeShareStorage, events: RecordingEvents
    ) -> None:
        their_volume(storage, "team/pvc-1")
        their_volume(storage, "archived-team")
        storage.write_record(SHARE, "archived-team", VolumeRecord("archived-team", 0))
        with pytest.raises(FailedPrecondition, match="inside volume 'archived-team'"):
            deleter(storage, events)(DeleteVolumeCommand("10.0.0.4#exports#team/pvc-1##archive"))
        assert tree(storage) == {"team", "team/pvc-1", "archived-team"}

    def test_an_archive_to_replace_that_is_ours_is_failed_precondition(
        self, storage: FakeShareStorage, events: RecordingEvents
    ) -> None:
        their_volume(storage, "pvc-1")
        their_volume(storage, "archived-pvc-1")
        storage.write_record(SHARE, "archived-pvc-1", VolumeRecord("archived-pvc-1", 0))
        theirs = CsiDriverNfsVolumes(manage=True, remove_archived=True)
        with pytest.raises(FailedPrecondition, match="of this driver"):
            deleter(storage, events, theirs)(DeleteVolumeCommand("10.0.0.4#exports#pvc-1##archive"))
        assert tree(storage) == {"pvc-1", "archived-pvc-1"}


class TestDescribeTheirVolume:
    def test_controller_get_volume_reports_its_directory(self, storage: FakeShareStorage) -> None:
        their_volume(storage, "pvc-1")
        view = ControllerGetVolume(storage)(ControllerGetVolumeCommand("10.0.0.4#exports#pvc-1##"))
        assert str(view.volume_id) == "10.0.0.4#exports#pvc-1##" and view.capacity_bytes == 0
        assert view.context == {"server": "10.0.0.4", "share": "/exports", "subDir": "pvc-1"}
        assert not view.condition.abnormal

    def test_controller_get_volume_of_a_missing_directory_is_not_found(self, storage: FakeShareStorage) -> None:
        with pytest.raises(NotFound):
            ControllerGetVolume(storage)(ControllerGetVolumeCommand("10.0.0.4#exports#pvc-1##"))

    def test_controller_get_volume_on_an_unreachable_share_is_abnormal(self, storage: FakeShareStorage) -> None:
        storage.exports = set()
        view = ControllerGetVolume(storage)(ControllerGetVolumeCommand("10.0.0.4#exports#pvc-1##"))
        assert view.condition.abnormal and "cannot be reached" in view.condition.message

    def test_validate_confirms_by_the_handle_or_the_context(self, storage: FakeShareStorage) -> None:
        their_volume(storage, "pvc-1")
        validate = ValidateVolumeCapabilities(storage, ProvisionDefaults())
        assert validate(ValidateVolumeCapabilitiesCommand("10.0.0.4#exports#pvc-1##", RWX)).confirmed
        context = {"server": "10.0.0.4", "share": "/exports", "subdir": "pvc-1", "storage.kubernetes.io/csiProvisionerIdentity": "x"}
        assert validate(ValidateVolumeCapabilitiesCommand("10.0.0.4#exports#pvc-1##", RWX, context)).confirmed
        with pytest.raises(NotFound):
            validate(ValidateVolumeCapabilitiesCommand("10.0.0.4#exports#pvc-2##", RWX))

    def test_expand_answers_the_size_asked_for_and_records_nothing(self, storage: FakeShareStorage) -> None:
        their_volume(storage, "pvc-1")
        expand = ControllerExpandVolume(storage, VolumeLocks())
        result = expand(ControllerExpandVolumeCommand("10.0.0.4#exports#pvc-1##", CapacityRange(5 << 30)))
        assert (result.capacity_bytes, result.node_expansion_required) == (5 << 30, False)
        assert storage.records == {}
        with pytest.raises(NotFound):
            expand(ControllerExpandVolumeCommand("10.0.0.4#exports#pvc-2##", CapacityRange(5 << 30)))


NSEP_METADATA = {
    "csi.storage.k8s.io/pvc/name": "data",
    "csi.storage.k8s.io/pvc/namespace": "app",
    "csi.storage.k8s.io/pv/name": "pvc-0a1b",
}


def nsep_params(**params: str) -> VolumeParameters:
    return VolumeParameters.parse({"server": "10.0.0.4", "share": "/exports", **params}, ProvisionDefaults())


class TestNfsSubdirExternalProvisionerParameters:
    @pytest.mark.parametrize(
        "value,policy",
        [("true", OnDelete.ARCHIVE), ("True", OnDelete.ARCHIVE), ("1", OnDelete.ARCHIVE), ("t", OnDelete.ARCHIVE),
         ("false", OnDelete.DELETE), ("FALSE", OnDelete.DELETE), ("0", OnDelete.DELETE)],
    )  # fmt: skip
    def test_archive_on_delete_maps_to_on_delete_as_go_reads_it(self, value: str, policy: OnDelete) -> None:
        assert nsep_params(archiveOnDelete=value).on_delete is policy

    @pytest.mark.parametrize("on_delete,policy", [("delete", OnDelete.DELETE), ("retain", OnDelete.RETAIN)])
    def test_on_delete_wins_over_archive_on_delete_as_in_nsep(self, on_delete: str, policy: OnDelete) -> None:
        assert nsep_params(archiveOnDelete="true", onDelete=on_delete).on_delete is policy

    @pytest.mark.parametrize("value", ["yes", "on", "TRUE ", "2"])
    def test_an_archive_on_delete_go_would_not_parse_is_invalid_argument(self, value: str) -> None:
        with pytest.raises(InvalidArgument, match="archiveOnDelete"):
            nsep_params(archiveOnDelete=value)
        with pytest.raises(InvalidArgument, match="archiveOnDelete"):
            nsep_params(archiveOnDelete=value, onDelete="retain")

    @pytest.mark.parametrize(
        "pattern,subdir",
        [
            ("${.PVC.namespace}/${.PVC.name}", "app/data"),
            ("${.PVC.namespace}-${.PVC.name}", "app-data"),
            ("volumes/${.PVC.name}", "volumes/data"),
            ("", "pvc-0a1b"),  # empty: the default naming, as in nsep (ours is the volume's name)
        ],
    )
    def test_path_pattern_becomes_the_subdir_template(self, pattern: str, subdir: str) -> None:
        assert nsep_params(pathPattern=pattern).resolve_subdir("pvc-0a1b", NSEP_METADATA) == subdir

    @pytest.mark.parametrize(
        "pattern,named",
        [
            ("${.PVC.labels.team}/${.PVC.name}", "${.PVC.labels.team}"),
            ("${.PVC.annotations.nfs.io/storage-path}", "${.PVC.annotations.nfs.io/storage-path}"),
            ("${.PVC.uid}", "${.PVC.uid}"),
            ("${pvc.metadata.name}", "${pvc.metadata.name}"),  # literal to nsep: never filled here by surprise
        ],
    )
    def test_what_cannot_be_expressed_is_invalid_argument_naming_it(self, pattern: str, named: str) -> None:
        with pytest.raises(InvalidArgument) as caught:
            nsep_params(pathPattern=pattern)
        assert named in str(caught.value)

    @pytest.mark.parametrize("pattern", ["../${.PVC.name}", "/abs/${.PVC.name}", "${.PVC.namespace}/../x"])
    def test_a_path_pattern_leaving_the_share_is_invalid_argument(self, pattern: str) -> None:
        with pytest.raises(InvalidArgument):
            nsep_params(pathPattern=pattern).resolve_subdir("pvc-0a1b", NSEP_METADATA)

    def test_path_pattern_and_sub_dir_together_are_invalid_argument(self) -> None:
        with pytest.raises(InvalidArgument, match="not both"):
            nsep_params(pathPattern="${.PVC.name}", subDir="x")

    def test_nseps_default_naming_is_one_subdir_template(self) -> None:
        params = nsep_params(subDir="${pvc.metadata.namespace}-${pvc.metadata.name}-${pv.metadata.name}")
        assert params.resolve_subdir("pvc-0a1b", NSEP_METADATA) == "app-data-pvc-0a1b"

    def test_empty_values_of_csi_driver_nfs_storage_classes_are_not_given(self) -> None:
        params = nsep_params(subDir="", onDelete="", mountPermissions="")
        assert (params.subdir_template, params.on_delete, params.mount_permissions) == ("", OnDelete.DELETE, 0)


def create(name: str = "pvc-1", **params: str) -> CreateVolumeCommand:
    return CreateVolumeCommand(name, RWX, CapacityRange(1 << 30), {"server": "10.0.0.4", "share": "/exports", **params})


class TestAdoption:
    def test_without_it_an_existing_directory_is_already_exists(self, provision: CreateVolume, storage: FakeShareStorage) -> None:
        their_volume(storage, "pvc-1", "data.txt")
        with pytest.raises(AlreadyExists, match="adoptExisting"):
            provision(create())
        assert storage.records == {}

    def test_an_existing_directory_is_taken_over_with_its_content_and_mode(
        self, storage: FakeShareStorage, events: RecordingEvents
    ) -> None:
        their_volume(storage, "app/data", "data.txt")
        storage.dirs[(SHARE, "app/data")] = 0o2770
        provision = CreateVolume(storage, VolumeLocks(), ProvisionDefaults(), events)
        command = create(adoptExisting="true", pathPattern="${.PVC.namespace}/${.PVC.name}", **NSEP_METADATA)
        volume = provision(command)
        assert volume.volume_id.subdir == "app/data"
        assert storage.records[(SHARE, "app/data")].name == "pvc-1"
        assert storage.files == {(SHARE, "app/data/data.txt"): b"their data"} and storage.dirs[(SHARE, "app/data")] == 0o2770
        assert provision(command) == volume  # a retry: the same volume
        assert events.events == [Event.VOLUME_ADOPTED]

    def test_mount_permissions_apply_to_an_adopted_directory(self, provision: CreateVolume, storage: FakeShareStorage) -> None:
        their_volume(storage, "pvc-1")
        provision(create(adoptExisting="true", mountPermissions="0775"))
        assert storage.dirs[(SHARE, "pvc-1")] == 0o775

    def test_a_missing_directory_is_made_as_usual(self, provision: CreateVolume, storage: FakeShareStorage) -> None:
        provision(create(adoptExisting="true"))
        assert (SHARE, "pvc-1") in storage.dirs and (SHARE, "pvc-1") in storage.records

    def test_a_directory_holding_another_volumes_record_is_never_adopted(
        self, provision: CreateVolume, storage: FakeShareStorage
    ) -> None:
        provision(create("pvc-1", subDir="shared"))
        with pytest.raises(AlreadyExists, match="belongs to volume 'pvc-1'"):
            provision(create("pvc-2", subDir="shared", adoptExisting="true"))
        assert storage.records[(SHARE, "shared")].name == "pvc-1"

    def test_a_directory_holding_a_volume_of_ours_is_never_adopted(self, provision: CreateVolume, storage: FakeShareStorage) -> None:
        provision(create("pvc-1", subDir="team/pvc-1"))
        with pytest.raises(AlreadyExists, match="holds 'team/pvc-1'"):
            provision(create("pvc-2", subDir="team", adoptExisting="true"))
        assert set(storage.records) == {(SHARE, "team/pvc-1")}

    def test_a_directory_inside_a_volume_of_ours_is_never_adopted(self, provision: CreateVolume, storage: FakeShareStorage) -> None:
        provision(create("pvc-1", subDir="team"))
        storage.create_volume_dir(SHARE, "team/inner", None)
        with pytest.raises(AlreadyExists, match="inside volume 'pvc-1'"):
            provision(create("pvc-2", subDir="team/inner", adoptExisting="true"))
        assert set(storage.records) == {(SHARE, "team")}

    @pytest.mark.parametrize("subdir", [".nfs-csi", ".nfs-csi/volumes", "/", ".", ".."])
    def test_the_drivers_own_directory_and_the_share_root_are_never_adopted(
        self, provision: CreateVolume, storage: FakeShareStorage, subdir: str
    ) -> None:
        storage.create_volume_dir(SHARE, ".nfs-csi/volumes", None)
        with pytest.raises(InvalidArgument):
            provision(create(subDir=subdir, adoptExisting="true"))
        assert storage.records == {}

    def test_a_clone_never_adopts(self, provision: CreateVolume, storage: FakeShareStorage) -> None:
        source = provision(create("src"))
        their_volume(storage, "pvc-1", "data.txt")
        with pytest.raises(AlreadyExists, match="content source"):
            provision(
                CreateVolumeCommand("pvc-1", RWX, CapacityRange(1 << 30), {"server": "10.0.0.4", "share": "/exports", "adoptExisting": "true"},
                                    ContentSource("volume", str(source.volume_id)))
            )  # fmt: skip
        assert (SHARE, "pvc-1") not in storage.records

    @pytest.mark.parametrize("value", ["yes", "1", ""])
    def test_adopt_existing_is_true_or_false(self, value: str) -> None:
        if value == "":
            assert not nsep_params(adoptExisting=value).adopt_existing
            return
        with pytest.raises(InvalidArgument, match="adoptExisting"):
            nsep_params(adoptExisting=value)
