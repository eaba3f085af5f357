"""Taking over from csi-driver-nfs on the controller: its volumes deleted, archived or retained only when the
operator says so, and described by ControllerGetVolume, ValidateVolumeCapabilities and ControllerExpandVolume."""

from __future__ import annotations

import logging

import pytest

from domain.errors import FailedPrecondition, NotFound
from domain.events import Event
from domain.locks import VolumeLocks
from domain.model import AccessMode, CapacityRange, OnDelete, ShareRef, VolumeCapability, VolumeRecord
from domain.parameters import CsiDriverNfsVolumes, ProvisionDefaults
from domain.usecases.controller import (
    DeleteVolume,
    DeleteVolumeCommand,
    ValidateVolumeCapabilities,
    ValidateVolumeCapabilitiesCommand,
)
from domain.usecases.volumes import (
    ControllerExpandVolume,
    ControllerExpandVolumeCommand,
    ControllerGetVolume,
    ControllerGetVolumeCommand,
)
from tests.fakes import FakeClock, FakeShareStorage

SHARE = ShareRef("10.0.0.4", "/exports")
RWX = (VolumeCapability(AccessMode.MULTI_NODE_MULTI_WRITER),)
MANAGED = CsiDriverNfsVolumes(manage=True)


class RecordingEvents:
    def __init__(self) -> None:
        self.events: list[Event] = []

    def emit(self, event: Event) -> None:
        self.events.append(event)


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
