"""The ShareStorage contract (ports/storage.py), run unchanged against every implementation."""

from __future__ import annotations

import hashlib
import json
import os
import threading
from typing import Any, Callable

import pytest

from adapters.storage.archive import copy_tree
from domain.errors import DomainError, FailedPrecondition, InvalidArgument, Obstructed, OperationInFlight, StorageFailed
from domain.model import Owner, ShareRef, VolumeRecord
from domain.snapshot_model import SnapshotRecord
from ports.storage import Obstacle
from tests.contract.conftest import Subject
from tests.contract.exports import DIR, FIFO, FILE, SYMLINK, DiskExport, record_path
from tests.fakes import FakeShareStorage

RECORD = VolumeRecord("pvc-1", 5 << 30, {"server": "127.0.0.1", "share": "/exports", "subDir": "ns/v"})
REFUSED = (DomainError, OSError)  # how an adapter says no; what matters is that nothing outside was touched


def at_once(calls: list[Callable[[], None]]) -> list[BaseException]:
    errors: list[BaseException] = []
    start = threading.Barrier(len(calls))

    def run(call: Callable[[], None]) -> None:
        start.wait()
        try:
            call()
        except BaseException as err:  # noqa: BLE001 - collected for the assertion
            errors.append(err)

    threads = [threading.Thread(target=run, args=(call,)) for call in calls]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    return errors


on_disk_only = pytest.mark.on_disk_only  # plants files or links behind the storage's back: not for the fake


class TestCreateVolumeDir:
    def test_creates_the_directory_and_its_missing_parents(self, subject: Subject) -> None:
        subject.storage.create_volume_dir(subject.share, "ns/team/v", None)
        assert subject.export.tree() == {"ns": DIR, "ns/team": DIR, "ns/team/v": DIR}
        assert subject.storage.exists(subject.share, "ns/team/v")

    def test_applies_the_mode_when_given(self, subject: Subject) -> None:
        subject.storage.create_volume_dir(subject.share, "v", 0o750)
        assert subject.export.mode("v") == 0o750

    def test_a_second_create_is_ok_and_keeps_what_is_inside(self, subject: Subject) -> None:
        subject.storage.create_volume_dir(subject.share, "v", None)
        subject.export.plant_dir("v/data")
        subject.storage.create_volume_dir(subject.share, "v", None)
        assert subject.export.tree() == {"v": DIR, "v/data": DIR}

    def test_a_mode_given_again_is_applied_to_the_existing_directory(self, subject: Subject) -> None:
        subject.storage.create_volume_dir(subject.share, "v", 0o700)
        subject.storage.create_volume_dir(subject.share, "v", 0o755)
        assert subject.export.mode("v") == 0o755

    def test_without_a_mode_the_existing_mode_is_left_alone(self, subject: Subject) -> None:
        subject.storage.create_volume_dir(subject.share, "v", 0o700)
        subject.storage.create_volume_dir(subject.share, "v", None)
        assert subject.export.mode("v") == 0o700

    def test_gives_the_owner_before_the_mode_so_set_id_bits_stay(self, subject: Subject) -> None:
        subject.storage.create_volume_dir(subject.share, "v", 0o2770, Owner(1234, 5678))
        assert subject.export.owner("v") == (1234, 5678) and subject.export.mode("v") == 0o2770

    def test_an_owner_given_in_part_changes_only_that_part(self, subject: Subject) -> None:
        subject.storage.create_volume_dir(subject.share, "v", None, Owner(1234, 5678))
        subject.storage.create_volume_dir(subject.share, "v", None, Owner(gid=42))
        assert subject.export.owner("v") == (1234, 42)

    def test_creates_nothing_beside_the_directory(self, subject: Subject) -> None:
        subject.storage.create_volume_dir(subject.share, "v", None)
        assert subject.storage.read_record(subject.share, "v") is None
        assert subject.export.tree() == {"v": DIR}

    @on_disk_only
    def test_a_symlink_on_the_way_is_not_followed(self, subject: Subject) -> None:
        subject.export.plant_symlink("ns")
        with pytest.raises(Obstructed):
            subject.storage.create_volume_dir(subject.share, "ns/victim/new", 0o700)
        assert subject.export.tree() == {"ns": SYMLINK}

    @on_disk_only
    def test_a_symlink_in_place_of_the_directory_is_refused(self, subject: Subject) -> None:
        subject.export.plant_symlink("v")
        with pytest.raises(REFUSED):
            subject.storage.create_volume_dir(subject.share, "v", None)
        assert subject.export.tree() == {"v": SYMLINK}

    @on_disk_only
    def test_a_file_in_place_of_the_directory_is_refused(self, subject: Subject) -> None:
        subject.export.plant_file("v", b"not a directory")
        with pytest.raises(REFUSED):
            subject.storage.create_volume_dir(subject.share, "v", 0o700)
        assert subject.export.read("v") == b"not a directory"


class TestRemoveVolumeDir:
    def test_removes_the_directory_and_everything_below_it(self, subject: Subject) -> None:
        subject.storage.create_volume_dir(subject.share, "ns/v", None)
        subject.export.plant_dir("ns/v/a/b/c")
        subject.storage.remove_volume_dir(subject.share, "ns/v")
        assert subject.export.tree() == {"ns": DIR}
        assert not subject.storage.exists(subject.share, "ns/v")

    @on_disk_only
    def test_removes_files_and_links_inside_without_following_the_links(self, subject: Subject) -> None:
        subject.storage.create_volume_dir(subject.share, "v", None)
        subject.export.plant_file("v/a/file")
        subject.export.plant_symlink("v/a/link")
        subject.storage.remove_volume_dir(subject.share, "v")
        assert subject.export.tree() == {}

    def test_missing_is_ok_and_so_is_a_missing_parent(self, subject: Subject) -> None:
        subject.storage.remove_volume_dir(subject.share, "v")
        subject.storage.remove_volume_dir(subject.share, "no/such/v")
        assert subject.export.tree() == {}

    def test_a_second_remove_is_ok(self, subject: Subject) -> None:
        subject.storage.create_volume_dir(subject.share, "v", None)
        subject.storage.remove_volume_dir(subject.share, "v")
        subject.storage.remove_volume_dir(subject.share, "v")
        assert subject.export.tree() == {}

    def test_leaves_its_record_its_siblings_and_its_parent(self, subject: Subject) -> None:
        subject.storage.write_record(subject.share, "ns/v", RECORD)
        subject.storage.create_volume_dir(subject.share, "ns/v", None)
        subject.storage.create_volume_dir(subject.share, "ns/v2", None)
        subject.storage.create_volume_dir(subject.share, "ns/v-suffix", None)
        subject.storage.remove_volume_dir(subject.share, "ns/v")
        assert subject.export.tree() == {"ns": DIR, "ns/v2": DIR, "ns/v-suffix": DIR, record_path("ns/v"): FILE}
        assert subject.storage.read_record(subject.share, "ns/v") == RECORD

    def test_the_records_of_volumes_inside_go_with_it(self, subject: Subject) -> None:
        subject.storage.create_volume_dir(subject.share, "v/inner", None)
        subject.storage.write_record(subject.share, "v/inner", RECORD)
        subject.storage.remove_volume_dir(subject.share, "v")
        assert subject.export.tree() == {}
        assert subject.storage.read_record(subject.share, "v/inner") is None

    @on_disk_only
    def test_a_symlink_on_the_way_is_not_followed(self, subject: Subject) -> None:
        subject.export.plant_symlink("ns")
        with pytest.raises(Obstructed):
            subject.storage.remove_volume_dir(subject.share, "ns/victim")
        assert subject.export.tree() == {"ns": SYMLINK}

    @on_disk_only
    def test_a_symlinked_volume_directory_is_not_removed_through(self, subject: Subject) -> None:
        subject.export.plant_symlink("v")
        with pytest.raises(REFUSED):
            subject.storage.remove_volume_dir(subject.share, "v")
        assert subject.export.tree() == {"v": SYMLINK}

    @on_disk_only
    def test_a_file_in_place_of_the_directory_is_refused(self, subject: Subject) -> None:
        subject.export.plant_file("v")
        with pytest.raises(REFUSED):
            subject.storage.remove_volume_dir(subject.share, "v")
        assert subject.export.tree() == {"v": FILE}

    def test_a_directory_still_being_filled_is_not_removed_under_the_writer(
        self, subject: Subject, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A copy that outlived its caller still writes there: the caller's retry is ABORTED, not raced."""
        storage, share = subject.storage, subject.share
        storage.create_volume_dir(share, "v", None)
        storage.create_volume_dir(share, "w", None)
        entered, release = _hold_the_next_fill(monkeypatch)
        errors: list[BaseException] = []

        def copy() -> None:
            try:
                storage.copy_volume(share, "v", share, "w")
            except BaseException as err:  # noqa: BLE001 - collected for the assertion
                errors.append(err)

        filler = threading.Thread(target=copy)
        filler.start()
        try:
            assert entered.wait(30), "the copy never started"
            with pytest.raises(OperationInFlight):
                storage.remove_volume_dir(share, "w")
            assert storage.exists(share, "w")
        finally:
            release.set()
            filler.join(60)
        assert errors == []
        storage.remove_volume_dir(share, "w")  # once the copy ended
        assert not storage.exists(share, "w")

    @on_disk_only
    @pytest.mark.parametrize("kind", ["file", "link", "fifo"])
    def test_below_a_file_a_link_or_a_fifo_nothing_is_removed(self, subject: Subject, kind: str) -> None:
        _plant(subject, "ns", kind)
        with pytest.raises(Obstructed):
            subject.storage.remove_volume_dir(subject.share, "ns/v")
        assert subject.export.tree() == {"ns": _KIND[kind]}

    @on_disk_only
    def test_a_fifo_in_place_of_the_directory_is_refused_without_being_opened(self, subject: Subject) -> None:
        """Opened to be walked, a FIFO no one writes to would hold the share's thread until the process ends."""
        _disk(subject).plant_fifo("v")
        with pytest.raises(Obstructed):
            subject.storage.remove_volume_dir(subject.share, "v")
        assert subject.export.tree() == {"v": FIFO}

    @on_disk_only
    def test_fifos_inside_are_removed_without_being_opened(self, subject: Subject) -> None:
        subject.storage.create_volume_dir(subject.share, "v", None)
        for path in ("v/pipe", "v/a/b/pipe"):
            _disk(subject).plant_fifo(path)
        subject.storage.remove_volume_dir(subject.share, "v")
        assert subject.export.tree() == {}


def _hold_the_next_fill(monkeypatch: pytest.MonkeyPatch) -> tuple[threading.Event, threading.Event]:
    """Make every implementation's copy wait, once started, until released: (started, release)."""
    entered, release = threading.Event(), threading.Event()

    def holding(original: Callable[..., Any]) -> Callable[..., Any]:
        def held(*args: Any, **kwargs: Any) -> Any:
            entered.set()
            release.wait(30)
            return original(*args, **kwargs)

        return held

    monkeypatch.setattr("adapters.storage.share_storage.copy_tree", holding(copy_tree))
    monkeypatch.setattr(FakeShareStorage, "_fill_now", holding(FakeShareStorage._fill_now))
    return entered, release


class TestInTheWay:
    """Where a new volume directory would go, what stands there: looked at before anything is written."""

    def test_a_free_place_has_nothing_in_the_way_and_nothing_is_made(self, subject: Subject) -> None:
        assert subject.storage.in_the_way(subject.share, "v") is None
        assert subject.storage.in_the_way(subject.share, "ns/team/v") is None
        subject.storage.create_volume_dir(subject.share, "ns", None)
        assert subject.storage.in_the_way(subject.share, "ns/v") is None
        assert subject.export.tree() == {"ns": DIR}

    def test_a_directory_there_is_in_the_way(self, subject: Subject) -> None:
        subject.storage.create_volume_dir(subject.share, "ns/v", None)
        assert subject.storage.in_the_way(subject.share, "ns/v") == Obstacle("ns/v", "directory")

    @on_disk_only
    @pytest.mark.parametrize("kind", ["file", "link", "fifo"])
    def test_a_file_a_link_or_a_fifo_there_or_on_the_way_is_named(self, subject: Subject, kind: str) -> None:
        _plant(subject, "ns", kind)
        _plant(subject, "dir/v", kind)
        expected = _OBSTACLE[kind]
        assert subject.storage.in_the_way(subject.share, "ns") == Obstacle("ns", expected)
        assert subject.storage.in_the_way(subject.share, "ns/v") == Obstacle("ns", expected)
        assert subject.storage.in_the_way(subject.share, "ns/a/b/v") == Obstacle("ns", expected)
        assert subject.storage.in_the_way(subject.share, "dir/v") == Obstacle("dir/v", expected)

    @on_disk_only
    @pytest.mark.parametrize("kind", ["link", "fifo"])
    def test_anything_but_a_file_in_the_records_place_is_named(self, subject: Subject, kind: str) -> None:
        _plant(subject, "ns/.v.nfs-csi.json", kind)
        assert subject.storage.in_the_way(subject.share, "ns/v") == Obstacle("ns/.v.nfs-csi.json", _OBSTACLE[kind])


class TestRenameVolumeDir:
    def test_renames_within_the_parent_and_takes_everything_along(self, subject: Subject) -> None:
        subject.storage.create_volume_dir(subject.share, "ns/v", 0o700)
        subject.storage.create_volume_dir(subject.share, "ns/v/inner", None)
        subject.storage.write_record(subject.share, "ns/v/inner", RECORD)
        subject.storage.rename_volume_dir(subject.share, "ns/v", "ns/archived-v")
        assert subject.export.tree() == {
            "ns": DIR,
            "ns/archived-v": DIR,
            "ns/archived-v/inner": DIR,
            record_path("ns/archived-v/inner"): FILE,
        }
        assert subject.export.mode("ns/archived-v") == 0o700
        assert subject.storage.exists(subject.share, "ns/archived-v") and not subject.storage.exists(subject.share, "ns/v")
        assert subject.storage.read_record(subject.share, "ns/archived-v/inner") == RECORD

    def test_leaves_the_record_beside_the_old_name(self, subject: Subject) -> None:
        subject.storage.write_record(subject.share, "v", RECORD)
        subject.storage.create_volume_dir(subject.share, "v", None)
        subject.storage.rename_volume_dir(subject.share, "v", "archived-v")
        assert subject.export.tree() == {"archived-v": DIR, record_path("v"): FILE}

    def test_missing_is_ok_so_a_repeated_rename_is_ok(self, subject: Subject) -> None:
        subject.storage.create_volume_dir(subject.share, "v", None)
        subject.storage.rename_volume_dir(subject.share, "v", "archived-v")
        subject.storage.rename_volume_dir(subject.share, "v", "archived-v")
        subject.storage.rename_volume_dir(subject.share, "no/such", "no/other")
        assert subject.export.tree() == {"archived-v": DIR}

    def test_a_rename_into_another_parent_is_refused(self, subject: Subject) -> None:
        subject.storage.create_volume_dir(subject.share, "a/v", None)
        subject.storage.create_volume_dir(subject.share, "b", None)
        with pytest.raises(StorageFailed):
            subject.storage.rename_volume_dir(subject.share, "a/v", "b/v")
        assert subject.export.tree() == {"a": DIR, "a/v": DIR, "b": DIR}

    @on_disk_only
    def test_a_symlink_on_the_way_is_not_followed(self, subject: Subject) -> None:
        subject.export.plant_symlink("ns")
        with pytest.raises(Obstructed):
            subject.storage.rename_volume_dir(subject.share, "ns/victim", "ns/archived-victim")
        assert subject.export.tree() == {"ns": SYMLINK}


class TestMoveVolumeDir:
    def test_moves_into_another_parent_made_on_the_way_and_takes_everything_along(self, subject: Subject) -> None:
        subject.storage.create_volume_dir(subject.share, "a/b/v", 0o750)
        subject.storage.create_volume_dir(subject.share, "a/b/v/data", None)
        subject.storage.move_volume_dir(subject.share, "a/b/v", "archived-a/b/v")
        assert subject.export.tree() == {
            "a": DIR, "a/b": DIR, "archived-a": DIR, "archived-a/b": DIR, "archived-a/b/v": DIR, "archived-a/b/v/data": DIR,
        }
        assert subject.export.mode("archived-a/b/v") == 0o750

    def test_missing_is_ok_so_a_repeated_move_is_ok(self, subject: Subject) -> None:
        subject.storage.create_volume_dir(subject.share, "v", None)
        subject.storage.move_volume_dir(subject.share, "v", "archived-v")
        subject.storage.move_volume_dir(subject.share, "v", "archived-v")
        subject.storage.move_volume_dir(subject.share, "no/such", "archived-no/such")
        assert subject.export.tree() == {"archived-v": DIR}

    def test_a_directory_at_the_destination_is_never_replaced(self, subject: Subject) -> None:
        subject.storage.create_volume_dir(subject.share, "v", None)
        subject.storage.create_volume_dir(subject.share, "archived-v", None)
        with pytest.raises(FailedPrecondition):
            subject.storage.move_volume_dir(subject.share, "v", "archived-v")
        assert subject.export.tree() == {"v": DIR, "archived-v": DIR}

    @on_disk_only
    def test_a_file_at_the_destination_is_never_replaced(self, subject: Subject) -> None:
        subject.storage.create_volume_dir(subject.share, "v", None)
        subject.export.plant_file("archived-v")
        with pytest.raises(FailedPrecondition):
            subject.storage.move_volume_dir(subject.share, "v", "archived-v")
        assert subject.export.tree() == {"v": DIR, "archived-v": FILE}

    @on_disk_only
    def test_a_symlink_on_the_way_to_the_destination_is_not_followed(self, subject: Subject) -> None:
        subject.storage.create_volume_dir(subject.share, "a/v", None)
        subject.export.plant_symlink("archived-a")
        outside = subject.export.outside_state()
        with pytest.raises(Obstructed):
            subject.storage.move_volume_dir(subject.share, "a/v", "archived-a/v")
        assert subject.export.tree() == {"a": DIR, "a/v": DIR, "archived-a": SYMLINK}
        assert subject.export.outside_state() == outside

    @on_disk_only
    def test_a_symlink_in_place_of_the_directory_is_not_moved(self, subject: Subject) -> None:
        subject.export.plant_symlink("v")
        subject.storage.move_volume_dir(subject.share, "v", "archived-v")
        assert subject.export.tree() == {"v": SYMLINK}


class TestVolumeBelow:
    def test_names_a_recorded_volume_strictly_below(self, subject: Subject) -> None:
        subject.storage.write_record(subject.share, "ns/team/v", RECORD)
        subject.storage.write_record(subject.share, "other", RECORD)
        assert subject.storage.volume_below(subject.share, "ns") == "ns/team/v"
        assert subject.storage.volume_below(subject.share, "ns/team") == "ns/team/v"
        assert subject.storage.volume_below(subject.share, "ns/team/v") is None  # itself is not below itself
        assert subject.storage.volume_below(subject.share, "n") is None  # a prefix of a name is no parent
        assert subject.storage.volume_below(subject.share, "oth") is None

    def test_an_entry_whose_record_is_gone_names_nothing(self, subject: Subject) -> None:
        subject.storage.write_record(subject.share, "v/inner", RECORD)
        subject.storage.remove_volume_dir(subject.share, "v")  # the inner record goes with the tree, its entry stays
        assert subject.storage.volume_below(subject.share, "v") is None

    def test_a_share_without_an_index_has_none(self, subject: Subject) -> None:
        subject.storage.create_volume_dir(subject.share, "ns/v", None)
        assert subject.storage.volume_below(subject.share, "ns") is None


class TestExists:
    def test_a_directory_exists(self, subject: Subject) -> None:
        subject.storage.create_volume_dir(subject.share, "ns/v", None)
        assert subject.storage.exists(subject.share, "ns/v")
        assert subject.storage.exists(subject.share, "ns")

    def test_a_directory_made_by_someone_else_exists(self, subject: Subject) -> None:
        subject.export.plant_dir("ns/v")
        assert subject.storage.exists(subject.share, "ns/v")

    def test_missing_and_a_missing_parent_do_not_exist(self, subject: Subject) -> None:
        assert not subject.storage.exists(subject.share, "v")
        assert not subject.storage.exists(subject.share, "no/such/v")

    @on_disk_only
    def test_a_file_is_not_a_directory(self, subject: Subject) -> None:
        subject.export.plant_file("v")
        assert not subject.storage.exists(subject.share, "v")

    @on_disk_only
    def test_a_symlink_to_a_directory_is_not_one(self, subject: Subject) -> None:
        subject.export.plant_symlink("v")
        assert not subject.storage.exists(subject.share, "v")

    @on_disk_only
    def test_a_symlink_on_the_way_is_not_followed(self, subject: Subject) -> None:
        subject.export.plant_symlink("ns")  # victim exists behind the link: no directory of the share's is there
        assert not subject.storage.exists(subject.share, "ns/victim")

    @on_disk_only
    def test_below_a_file_or_a_fifo_there_is_no_directory(self, subject: Subject) -> None:
        subject.export.plant_file("ns")
        _disk(subject).plant_fifo("fifo")
        assert not subject.storage.exists(subject.share, "ns/v")
        assert not subject.storage.exists(subject.share, "fifo/v")
        assert not subject.storage.exists(subject.share, "fifo")


class TestRecords:
    def test_a_record_is_kept_beside_its_directory_as_json(self, subject: Subject) -> None:
        subject.storage.write_record(subject.share, "ns/v", RECORD)
        assert subject.export.tree() == {"ns": DIR, "ns/.v.nfs-csi.json": FILE}
        assert json.loads(subject.export.read("ns/.v.nfs-csi.json")) == {
            "name": "pvc-1",
            "capacity_bytes": 5 << 30,
            "parameters": {"server": "127.0.0.1", "share": "/exports", "subDir": "ns/v"},
            "version": 1,
        }
        assert subject.storage.read_record(subject.share, "ns/v") == RECORD

    def test_a_record_does_not_make_the_directory(self, subject: Subject) -> None:
        subject.storage.write_record(subject.share, "v", RECORD)
        assert not subject.storage.exists(subject.share, "v")

    def test_no_record_is_none_and_so_is_a_missing_parent(self, subject: Subject) -> None:
        subject.storage.create_volume_dir(subject.share, "v", None)
        assert subject.storage.read_record(subject.share, "v") is None
        assert subject.storage.read_record(subject.share, "no/such/v") is None

    def test_a_second_write_replaces_the_first(self, subject: Subject) -> None:
        subject.storage.write_record(subject.share, "v", RECORD)
        other = VolumeRecord("pvc-1", 1 << 30, {"subDir": "v"})
        subject.storage.write_record(subject.share, "v", other)
        assert subject.storage.read_record(subject.share, "v") == other
        assert subject.export.tree() == {".v.nfs-csi.json": FILE}

    def test_remove_then_remove_again_is_ok(self, subject: Subject) -> None:
        subject.storage.write_record(subject.share, "ns/v", RECORD)
        subject.storage.remove_record(subject.share, "ns/v")
        subject.storage.remove_record(subject.share, "ns/v")
        subject.storage.remove_record(subject.share, "no/such/v")
        assert subject.storage.read_record(subject.share, "ns/v") is None
        assert subject.export.tree() == {"ns": DIR}

    def test_removing_a_record_leaves_its_directory(self, subject: Subject) -> None:
        subject.storage.write_record(subject.share, "v", RECORD)
        subject.storage.create_volume_dir(subject.share, "v", None)
        subject.storage.remove_record(subject.share, "v")
        assert subject.export.tree() == {"v": DIR}

    @on_disk_only
    def test_a_record_written_by_someone_else_is_read(self, subject: Subject) -> None:
        subject.export.plant_file("ns/.v.nfs-csi.json", RECORD.to_json())
        assert subject.storage.read_record(subject.share, "ns/v") == RECORD

    @on_disk_only
    def test_an_unreadable_record_is_an_error_not_a_missing_one(self, subject: Subject) -> None:
        subject.export.plant_file(".v.nfs-csi.json", b"{not json")
        with pytest.raises(StorageFailed, match="unreadable"):
            subject.storage.read_record(subject.share, "v")

    @on_disk_only
    def test_a_symlink_on_the_way_is_not_followed(self, subject: Subject) -> None:
        subject.export.plant_symlink("ns")  # the victim's record is behind the link: no record of the share's
        assert subject.storage.read_record(subject.share, "ns/victim") is None
        with pytest.raises(Obstructed):
            subject.storage.write_record(subject.share, "ns/victim", RECORD)
        subject.storage.remove_record(subject.share, "ns/victim")  # nothing of the driver's can be there
        assert subject.export.tree() == {"ns": SYMLINK}

    @on_disk_only
    def test_a_record_that_is_a_symlink_is_never_read_through(self, subject: Subject) -> None:
        subject.export.plant_symlink(".v.nfs-csi.json")  # the driver writes regular files only: this is no record
        assert subject.storage.read_record(subject.share, "v") is None

    @on_disk_only
    def test_a_record_that_is_a_fifo_is_no_record_and_is_never_opened(self, subject: Subject) -> None:
        _disk(subject).plant_fifo(".v.nfs-csi.json")
        assert subject.storage.read_record(subject.share, "v") is None  # would block forever if it were opened

    @on_disk_only
    def test_writing_over_a_symlinked_record_replaces_the_link_itself(self, subject: Subject) -> None:
        subject.export.plant_symlink(".v.nfs-csi.json")
        subject.storage.write_record(subject.share, "v", RECORD)
        assert subject.export.tree() == {".v.nfs-csi.json": FILE}
        assert subject.storage.read_record(subject.share, "v") == RECORD

    @on_disk_only
    def test_removing_a_symlinked_record_removes_the_link_itself(self, subject: Subject) -> None:
        subject.export.plant_symlink(".v.nfs-csi.json")
        subject.storage.remove_record(subject.share, "v")
        assert subject.export.tree() == {}


class TestConcurrency:
    def test_volumes_created_at_once_all_exist(self, subject: Subject) -> None:
        names = [f"ns/v{i}" for i in range(8)]

        def provision(name: str) -> Callable[[], None]:
            def run() -> None:
                subject.storage.write_record(subject.share, name, VolumeRecord(name, 1))
                subject.storage.create_volume_dir(subject.share, name, 0o770)

            return run

        assert at_once([provision(name) for name in names]) == []
        for name in names:
            assert subject.storage.exists(subject.share, name)
            assert subject.storage.read_record(subject.share, name) == VolumeRecord(name, 1)
            assert subject.export.mode(name) == 0o770

    def test_a_record_written_at_once_is_one_whole_record(self, subject: Subject) -> None:
        records = [VolumeRecord("pvc-1", i, {"writer": str(i)}) for i in range(8)]
        assert at_once([lambda r=r: subject.storage.write_record(subject.share, "v", r) for r in records]) == []
        assert subject.storage.read_record(subject.share, "v") in records
        assert subject.export.tree() == {".v.nfs-csi.json": FILE}


class TestClose:
    def test_close_twice_is_ok(self, subject: Subject) -> None:
        subject.storage.create_volume_dir(subject.share, "v", None)
        subject.storage.close()
        subject.storage.close()


class TestShareReachable:
    def test_the_exported_share_is_reachable(self, subject: Subject) -> None:
        assert subject.storage.share_reachable(subject.share)

    def test_a_share_the_server_does_not_export_is_not(self, subject: Subject) -> None:
        assert not subject.storage.share_reachable(ShareRef(subject.share.server, "/no/such/export"))


def _disk(subject: Subject) -> DiskExport:
    assert isinstance(subject.export, DiskExport)
    return subject.export


def _plant_relative_link(subject: Subject, path: str, target: str) -> None:
    os.symlink(target, _disk(subject).root / path)


SNAPSHOT = SnapshotRecord("snap-1", "nfs1#127.0.0.1#/exports#v#delete", 1024, 1_700_000_000_000_000_000, "tar.gz")


class TestSnapshots:
    def test_a_record_is_written_read_listed_and_removed(self, subject: Subject) -> None:
        storage, share = subject.storage, subject.share
        assert storage.read_snapshot_record(share, "snap-1") is None
        assert storage.list_snapshot_records(share) == []
        storage.write_snapshot_record(share, "snap-1", SNAPSHOT)
        assert storage.read_snapshot_record(share, "snap-1") == SNAPSHOT
        assert storage.list_snapshot_records(share) == [("snap-1", SNAPSHOT)]
        storage.remove_snapshot(share, "snap-1")
        storage.remove_snapshot(share, "snap-1")
        assert storage.read_snapshot_record(share, "snap-1") is None
        assert storage.list_snapshot_records(share) == []

    def test_pack_returns_a_size_and_a_packed_volume_restores_into_another(self, subject: Subject) -> None:
        storage, share = subject.storage, subject.share
        storage.create_volume_dir(share, "v", None)
        storage.create_volume_dir(share, "v/sub", None)
        packed = storage.pack_snapshot(share, "v", share, "snap-1", "tar")
        assert packed.archive_bytes > 0 and packed.content_bytes == 0
        storage.create_volume_dir(share, "w", None)
        storage.restore_snapshot(share, "snap-1", "tar", share, "w")
        assert storage.exists(share, "w/sub")

    @on_disk_only
    @pytest.mark.parametrize("fmt", ["tar.gz", "tar"])
    def test_files_and_links_survive_pack_and_restore(self, subject: Subject, fmt: str) -> None:
        storage, share = subject.storage, subject.share
        storage.create_volume_dir(share, "v", None)
        subject.export.plant_file("v/a/file", b"content")
        _plant_relative_link(subject, "v/out", "a")
        packed = storage.pack_snapshot(share, "v", share, "snap-1", fmt)
        archive = _disk(subject).root / f".nfs-csi/snapshots/snap-1.{fmt}"
        assert archive.stat().st_size == packed.archive_bytes and packed.content_bytes == len(b"content")
        storage.create_volume_dir(share, "w", None)
        storage.restore_snapshot(share, "snap-1", fmt, share, "w")
        tree = subject.export.tree()
        assert (tree["w/a"], tree["w/a/file"], tree["w/out"]) == (DIR, FILE, SYMLINK)
        assert subject.export.read("w/a/file") == b"content"
        assert os.readlink(_disk(subject).root / "w/out") == "a"

    @on_disk_only
    def test_a_link_leaving_the_volume_is_refused_when_packing_or_copying(self, subject: Subject) -> None:
        """A restore would refuse it; refusing it at once beats a snapshot that can never be restored."""
        storage, share = subject.storage, subject.share
        storage.create_volume_dir(share, "v", None)
        subject.export.plant_symlink("v/out")  # to a directory outside the share
        with pytest.raises(FailedPrecondition, match="could never be restored"):
            storage.pack_snapshot(share, "v", share, "snap-1", "tar")
        snapshots = _disk(subject).root / ".nfs-csi/snapshots"
        assert not snapshots.is_dir() or list(snapshots.iterdir()) == []
        storage.create_volume_dir(share, "w", None)
        with pytest.raises(FailedPrecondition, match="could never be restored"):
            storage.copy_volume(share, "v", share, "w")
        assert [path for path in subject.export.tree() if path.startswith("w/")] == []

    @on_disk_only
    def test_copy_volume_copies_files_and_links(self, subject: Subject) -> None:
        storage, share = subject.storage, subject.share
        storage.create_volume_dir(share, "v", None)
        subject.export.plant_file("v/a/file", b"content")
        _plant_relative_link(subject, "v/out", "a/file")
        storage.create_volume_dir(share, "w", None)
        storage.copy_volume(share, "v", share, "w")
        tree = subject.export.tree()
        assert (tree["w/a/file"], tree["w/out"]) == (FILE, SYMLINK)
        assert subject.export.read("w/a/file") == b"content"

    @on_disk_only
    def test_remove_takes_the_temporaries_of_cut_short_writes_along(self, subject: Subject) -> None:
        storage, share = subject.storage, subject.share
        storage.write_snapshot_record(share, "snap-1", SNAPSHOT)
        left = ["snap-1.json.tmp", "snap-1.json.tmp4242.0123456789ab", "snap-1.tar.gz.tmp", "snap-1.tar.tmp",
                "snap-1.tar.gz.tmp.4242.0123456789ab", "snap-1.tar.tmp.77.ba9876543210"]
        for name in [*left, "snap-10.json.tmp", "snap-10.json", "snap-10.tar.gz.tmp.1.0123456789ab"]:
            subject.export.plant_file(f".nfs-csi/snapshots/{name}")
        storage.remove_snapshot(share, "snap-1")
        assert sorted(os.listdir(_disk(subject).root / ".nfs-csi/snapshots")) == [
            "snap-10.json", "snap-10.json.tmp", "snap-10.tar.gz.tmp.1.0123456789ab"
        ]

    @on_disk_only
    def test_a_volume_that_is_a_link_is_not_packed(self, subject: Subject) -> None:
        subject.export.plant_symlink("v")
        with pytest.raises(REFUSED):
            subject.storage.pack_snapshot(subject.share, "v", subject.share, "snap-1", "tar")
        snapshots = _disk(subject).root / ".nfs-csi/snapshots"
        assert not snapshots.is_dir() or not any(p.name.startswith("snap-1") for p in snapshots.iterdir())


    @on_disk_only
    @pytest.mark.parametrize("kind", ["file", "fifo"])
    def test_a_volume_that_is_a_file_or_a_fifo_is_not_packed_nor_copied(self, subject: Subject, kind: str) -> None:
        storage, share = subject.storage, subject.share
        _plant(subject, "v", kind)
        with pytest.raises(Obstructed):
            storage.pack_snapshot(share, "v", share, "snap-1", "tar")
        storage.create_volume_dir(share, "w", None)
        with pytest.raises(Obstructed):
            storage.copy_volume(share, "v", share, "w")
        snapshots = _disk(subject).root / ".nfs-csi/snapshots"
        assert not snapshots.is_dir() or list(snapshots.iterdir()) == []

    @on_disk_only
    def test_fifos_inside_a_volume_are_left_out_without_being_opened(self, subject: Subject) -> None:
        storage, share = subject.storage, subject.share
        storage.create_volume_dir(share, "v", None)
        subject.export.plant_file("v/data", b"content")
        _disk(subject).plant_fifo("v/pipe")
        storage.create_volume_dir(share, "w", None)
        storage.copy_volume(share, "v", share, "w")
        assert storage.pack_snapshot(share, "v", share, "snap-1", "tar").archive_bytes > 0
        assert {path: kind for path, kind in subject.export.tree().items() if path.startswith("w")} == {"w": DIR, "w/data": FILE}


_KIND = {"file": FILE, "link": SYMLINK, "fifo": FIFO}
_OBSTACLE = {"file": "regular file", "link": "symbolic link", "fifo": "FIFO, socket or device"}


def _plant(subject: Subject, path: str, kind: str) -> None:
    """A regular file, a link leading off the share, or a FIFO no one writes to, at path."""
    if kind == "file":
        subject.export.plant_file(path)
    elif kind == "link":
        subject.export.plant_symlink(path)
    else:
        _disk(subject).plant_fifo(path)


def _record(name: str) -> VolumeRecord:
    return VolumeRecord(name, 1 << 30, {"subDir": name})


class TestVolumeIndex:
    def test_written_records_are_listed_with_their_subdirs_in_a_stable_order(self, subject: Subject) -> None:
        subdirs = ["a", "ns/b", "ns/deep/c"]
        for subdir in subdirs:
            subject.storage.write_record(subject.share, subdir, _record(subdir))
        listed = subject.storage.list_records(subject.share, None, 0)
        assert sorted((v.subdir, v.record) for v in listed) == sorted((s, _record(s)) for s in subdirs)
        assert [v.position for v in listed] == sorted(v.position for v in listed)
        assert subject.storage.list_records(subject.share, None, 0) == listed

    def test_the_index_lives_in_the_drivers_directory_one_hashed_entry_per_volume(self, subject: Subject) -> None:
        subject.storage.write_record(subject.share, "ns/v", RECORD)
        assert subject.export.index() == {hashlib.sha256(b"ns/v").hexdigest(): b"ns/v"}
        assert subject.export.tree() == {"ns": DIR, "ns/.v.nfs-csi.json": FILE}

    def test_after_and_limit_page_through_every_volume_once(self, subject: Subject) -> None:
        for i in range(5):
            subject.storage.write_record(subject.share, f"v{i}", _record(f"v{i}"))
        seen: list[str] = []
        after = None
        while page := subject.storage.list_records(subject.share, after, 2):
            assert len(page) <= 2
            seen += [v.subdir for v in page]
            after = page[-1].position
        assert sorted(seen) == [f"v{i}" for i in range(5)]

    def test_a_rewritten_record_keeps_its_place(self, subject: Subject) -> None:
        subject.storage.write_record(subject.share, "a", _record("a"))
        subject.storage.write_record(subject.share, "b", _record("b"))
        before = {v.subdir: v.position for v in subject.storage.list_records(subject.share, None, 0)}
        subject.storage.write_record(subject.share, "a", VolumeRecord("a", 2 << 30))
        after = {v.subdir: v for v in subject.storage.list_records(subject.share, None, 0)}
        assert {s: v.position for s, v in after.items()} == before
        assert after["a"].record == VolumeRecord("a", 2 << 30)

    def test_a_volume_indexed_later_sorts_after_the_earlier_ones(self, subject: Subject) -> None:
        subject.storage.write_record(subject.share, "a", _record("a"))
        (first,) = subject.storage.list_records(subject.share, None, 0)
        subject.storage.write_record(subject.share, "b", _record("b"))
        later = [v for v in subject.storage.list_records(subject.share, None, 0) if v.subdir == "b"]
        assert later[0].position.created_ns >= first.position.created_ns

    def test_a_removed_record_takes_its_entry_along_and_its_position_still_pages(self, subject: Subject) -> None:
        for name in ("a", "b", "c"):
            subject.storage.write_record(subject.share, name, _record(name))
        listed = subject.storage.list_records(subject.share, None, 0)
        subject.storage.remove_record(subject.share, listed[0].subdir)
        assert len(subject.export.index()) == 2
        rest = subject.storage.list_records(subject.share, listed[0].position, 0)
        assert [v.subdir for v in rest] == [v.subdir for v in listed[1:]]
        for volume in listed[1:]:
            subject.storage.remove_record(subject.share, volume.subdir)
        assert subject.export.index() == {}
        assert subject.storage.list_records(subject.share, None, 0) == []

    def test_an_entry_whose_record_is_gone_is_skipped(self, subject: Subject) -> None:
        subject.storage.write_record(subject.share, "v/inner", _record("v/inner"))
        subject.storage.write_record(subject.share, "w", _record("w"))
        subject.storage.remove_volume_dir(subject.share, "v")  # the inner record goes with the tree, its entry stays
        assert [v.subdir for v in subject.storage.list_records(subject.share, None, 0)] == ["w"]

    def test_a_subdir_of_1024_bytes_fits_its_entry(self, subject: Subject) -> None:
        subdir = "/".join(["d" * 200] * 5)
        subject.storage.write_record(subject.share, subdir, _record("long"))
        assert [v.subdir for v in subject.storage.list_records(subject.share, None, 0)] == [subdir]

    def test_an_empty_or_missing_index_lists_nothing(self, subject: Subject) -> None:
        assert subject.storage.list_records(subject.share, None, 0) == []

    @on_disk_only
    def test_an_entry_that_does_not_name_itself_is_skipped(self, subject: Subject) -> None:
        subject.storage.write_record(subject.share, "v", _record("v"))
        subject.storage.write_record(subject.share, "w", _record("w"))
        subject.export.plant_file(f".nfs-csi/volumes/{'0' * 64}", b"v")
        subject.export.plant_file(".nfs-csi/volumes/" + hashlib.sha256(b"w").hexdigest(), b"../w")
        assert [v.subdir for v in subject.storage.list_records(subject.share, None, 0)] == ["v"]

    @on_disk_only
    def test_a_half_written_entry_is_completed_by_the_next_write(self, subject: Subject) -> None:
        entry = hashlib.sha256(b"v").hexdigest()
        subject.export.plant_file(f".nfs-csi/volumes/{entry}", b"")
        subject.storage.write_record(subject.share, "v", _record("v"))
        assert subject.export.index() == {entry: b"v"}
        assert [v.subdir for v in subject.storage.list_records(subject.share, None, 0)] == ["v"]

    @on_disk_only
    def test_a_link_in_place_of_an_entry_is_replaced_never_followed(self, subject: Subject) -> None:
        """Nothing but a file is a valid entry; one planted in the driver's own directory must not fail the
        volume's every write (the fixture proves the link's target was not touched)."""
        entry = hashlib.sha256(b"v").hexdigest()
        subject.export.plant_symlink(f".nfs-csi/volumes/{entry}")
        subject.storage.write_record(subject.share, "v", _record("v"))
        assert not os.path.islink(_disk(subject).root / ".nfs-csi/volumes" / entry)
        assert subject.export.index() == {entry: b"v"}
        assert [v.subdir for v in subject.storage.list_records(subject.share, None, 0)] == ["v"]

    @on_disk_only
    def test_a_directory_in_place_of_an_entry_is_refused(self, subject: Subject) -> None:
        entry = hashlib.sha256(b"v").hexdigest()
        subject.export.plant_dir(f".nfs-csi/volumes/{entry}")
        with pytest.raises(Obstructed):
            subject.storage.write_record(subject.share, "v", _record("v"))
        assert (_disk(subject).root / ".nfs-csi/volumes" / entry).is_dir()

    @on_disk_only
    def test_a_symlinked_index_is_never_followed(self, subject: Subject) -> None:
        subject.export.plant_symlink(".nfs-csi")
        with pytest.raises(Obstructed):
            subject.storage.write_record(subject.share, "v", RECORD)
        with pytest.raises(Obstructed):
            subject.storage.list_records(subject.share, None, 0)
        assert subject.storage.read_record(subject.share, "v") is None


class TestAvailableBytes:
    def test_is_what_the_server_has_free(self, subject: Subject) -> None:
        expected = subject.export.free_bytes()
        assert abs(subject.storage.available_bytes(subject.share) - expected) <= max(64 << 20, expected // 100)

    def test_an_unexported_share_is_refused(self, subject: Subject) -> None:
        with pytest.raises(DomainError):
            subject.storage.available_bytes(ShareRef(subject.share.server, "/no/such/export"))


class TestDriversDirectory:
    """Snapshots hold full copies of users' data: ``.nfs-csi`` and all in it are the driver's alone (0700)."""

    @on_disk_only
    @pytest.mark.parametrize("first", ["index", "snapshot record", "pack"])
    def test_is_private_whichever_feature_makes_it(self, subject: Subject, first: str) -> None:
        storage, share = subject.storage, subject.share
        storage.create_volume_dir(share, "v", None)
        features: dict[str, Callable[[], object]] = {
            "index": lambda: storage.write_record(share, "v", RECORD),
            "snapshot record": lambda: storage.write_snapshot_record(share, "snap-1", SNAPSHOT),
            "pack": lambda: storage.pack_snapshot(share, "v", share, "snap-2", "tar"),
        }
        features.pop(first)()
        assert subject.export.mode(".nfs-csi") == 0o700
        for feature in features.values():
            feature()
        modes = {path: subject.export.mode(path) for path in (".nfs-csi", ".nfs-csi/volumes", ".nfs-csi/snapshots")}
        assert modes == dict.fromkeys(modes, 0o700)
