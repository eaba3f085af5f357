"""Snapshots and clones, against fakes."""

from __future__ import annotations

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
from domain.events import Event
from domain.locks import VolumeLocks
from domain.model import AccessMode, CapacityRange, ShareRef, VolumeCapability
from domain.snapshot_model import PackedSnapshot, SnapshotId, SnapshotParameters, SnapshotRecord, snapshot_leaf
from domain.usecases.controller import CreateVolume, CreateVolumeCommand, DeleteVolume, DeleteVolumeCommand
from domain.usecases.snapshots import (
    PENDING_KEY,
    ContentSource,
    CreateSnapshot,
    CreateSnapshotCommand,
    DeleteSnapshot,
    DeleteSnapshotCommand,
    GetSnapshot,
    GetSnapshotCommand,
    ListSnapshots,
    ListSnapshotsCommand,
    restore_size,
)
from tests.fakes import FakeClock, FakeShareStorage

SHARE = ShareRef("nfs.example", "/exports")
OTHER = ShareRef("backup.example", "/snapshots")
PARAMS = {"server": "nfs.example", "share": "/exports"}
RWX = (VolumeCapability(AccessMode.MULTI_NODE_MULTI_WRITER),)
GIB = 1 << 30


class Recorder:
    def __init__(self) -> None:
        self.events: list[Event] = []

    def emit(self, event: Event) -> None:
        self.events.append(event)


@pytest.fixture
def events() -> Recorder:
    return Recorder()


@pytest.fixture
def snap(storage: FakeShareStorage, locks: VolumeLocks, events: Recorder) -> CreateSnapshot:
    return CreateSnapshot(storage, locks, FakeClock(), events)


def volume(provision: CreateVolume, storage: FakeShareStorage, name: str = "pvc-1", **files: bytes) -> str:
    made = provision(CreateVolumeCommand(name, RWX, CapacityRange(GIB), PARAMS))
    for path, data in files.items():
        storage.files[(SHARE, f"{name}/{path}")] = data
    return str(made.volume_id)


def clone(name: str, kind: str, source: str, **params: str) -> CreateVolumeCommand:
    return CreateVolumeCommand(name, RWX, CapacityRange(GIB), {**PARAMS, **params}, content_source=ContentSource(kind, source))


class TestSnapshotIds:
    @pytest.mark.parametrize("name", ["snapshot-1", "a" * 128, "with space", "ünï/..", "x.y", "%#"])
    def test_every_name_gives_an_id_that_parses_back(self, name: str) -> None:
        snapshot_id = SnapshotId(SHARE, snapshot_leaf(name))
        assert SnapshotId.parse(str(snapshot_id)) == snapshot_id
        assert "/" not in snapshot_id.leaf and ".." not in snapshot_id.leaf

    @pytest.mark.parametrize(
        "raw", ["", "fake-snapshot-id", "nfs1snap#nfs.example#/exports#../x", "nfs1snap#nfs.example#/exports#h.zz",
                "nfs1snap#nfs.example#relative#s", "nfs1#nfs.example#/exports#s#delete"],
    )  # fmt: skip
    def test_foreign_or_hostile_ids_are_not_ours(self, raw: str) -> None:
        assert SnapshotId.parse(raw) is None

    def test_parameters_know_format_server_and_share_and_ignore_reserved_keys(self) -> None:
        parsed = SnapshotParameters.parse(
            {"Server": "backup.example", "share": "/snapshots", "format": "tar", "csi.storage.k8s.io/volumesnapshot/name": "x"}
        )
        assert parsed == SnapshotParameters(OTHER, "tar")

    @pytest.mark.parametrize(
        "raw", [{"colour": "blue"}, {"format": "zip"}, {"server": "backup.example"}, {"share": "/x"},
                {"server": "-o", "share": "/x"}, {"format": "tar", "FORMAT": "tar"}],
    )  # fmt: skip
    def test_bad_parameters_are_invalid_argument(self, raw: dict[str, str]) -> None:
        with pytest.raises(InvalidArgument):
            SnapshotParameters.parse(raw)


class TestCreateSnapshot:
    def test_archives_the_volume_and_records_it_last(
        self, provision: CreateVolume, storage: FakeShareStorage, snap: CreateSnapshot, events: Recorder
    ) -> None:
        source = volume(provision, storage, data=b"hello")
        snapshot = snap(CreateSnapshotCommand("snap-1", source))
        assert str(snapshot.snapshot_id) == "nfs1snap#nfs.example#/exports#snap-1"
        assert snapshot.ready_to_use and snapshot.source_volume_id == source
        assert snapshot.size_bytes == storage.snapshot_records[(SHARE, "snap-1")].size_bytes == GIB
        assert storage.archives[(SHARE, "snap-1")] == {"data": b"hello"}
        assert snapshot.created == FakeClock().now()
        assert events.events == [Event.SNAPSHOT_CREATED]

    def test_a_retry_returns_the_same_snapshot_without_packing_again(
        self, provision: CreateVolume, storage: FakeShareStorage, snap: CreateSnapshot, events: Recorder
    ) -> None:
        source = volume(provision, storage, data=b"hello")
        first = snap(CreateSnapshotCommand("snap-1", source))
        storage.files[(SHARE, "pvc-1/data")] = b"changed"
        assert snap(CreateSnapshotCommand("snap-1", source)) == first
        assert storage.archives[(SHARE, "snap-1")] == {"data": b"hello"}
        assert events.events == [Event.SNAPSHOT_CREATED]

    def test_the_same_name_from_another_source_is_already_exists(
        self, provision: CreateVolume, storage: FakeShareStorage, snap: CreateSnapshot
    ) -> None:
        snap(CreateSnapshotCommand("snap-1", volume(provision, storage, "pvc-1")))
        with pytest.raises(AlreadyExists):
            snap(CreateSnapshotCommand("snap-1", volume(provision, storage, "pvc-2")))

    def test_the_same_name_in_another_format_is_already_exists(
        self, provision: CreateVolume, storage: FakeShareStorage, snap: CreateSnapshot
    ) -> None:
        source = volume(provision, storage)
        snap(CreateSnapshotCommand("snap-1", source))
        with pytest.raises(AlreadyExists):
            snap(CreateSnapshotCommand("snap-1", source, {"format": "tar"}))

    def test_the_archive_goes_to_the_share_the_class_names(
        self, provision: CreateVolume, storage: FakeShareStorage, snap: CreateSnapshot
    ) -> None:
        snapshot = snap(CreateSnapshotCommand("snap-1", volume(provision, storage), {"server": OTHER.server, "share": OTHER.share}))
        assert snapshot.snapshot_id.share == OTHER and (OTHER, "snap-1") in storage.snapshot_records

    @pytest.mark.parametrize("source", ["fake-vol-id", "nfs1#nfs.example#/exports#missing#delete"])
    def test_a_missing_source_volume_is_not_found(self, snap: CreateSnapshot, storage: FakeShareStorage, source: str) -> None:
        with pytest.raises(NotFound):
            snap(CreateSnapshotCommand("snap-1", source))
        assert storage.archives == {} and storage.snapshot_records == {}

    @pytest.mark.parametrize(
        "command", [CreateSnapshotCommand("", "x"), CreateSnapshotCommand("s", ""), CreateSnapshotCommand("s\n", "x"),
                    CreateSnapshotCommand("s", "x", {"unknown": "1"})],
    )  # fmt: skip
    def test_bad_requests_are_invalid_argument(self, snap: CreateSnapshot, command: CreateSnapshotCommand) -> None:
        with pytest.raises(InvalidArgument):
            snap(command)

    def test_a_retry_while_the_first_still_packs_is_aborted(
        self, provision: CreateVolume, storage: FakeShareStorage, snap: CreateSnapshot, locks: VolumeLocks
    ) -> None:
        source = volume(provision, storage)
        with locks.hold("snapshot-name:snap-1"):
            with pytest.raises(OperationInFlight):
                snap(CreateSnapshotCommand("snap-1", source))

    def test_a_pack_that_fails_leaves_no_record(
        self, provision: CreateVolume, storage: FakeShareStorage, snap: CreateSnapshot, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        source = volume(provision, storage)

        def too_slow(*args: object) -> int:
            raise DeadlineExceeded("packing took too long")

        monkeypatch.setattr(storage, "pack_snapshot", too_slow)
        with pytest.raises(DeadlineExceeded):
            snap(CreateSnapshotCommand("snap-1", source))
        assert storage.snapshot_records == {}


class TestDeleteGetList:
    def test_delete_removes_record_and_archive_and_a_second_delete_is_ok(
        self, provision: CreateVolume, storage: FakeShareStorage, snap: CreateSnapshot, locks: VolumeLocks, events: Recorder
    ) -> None:
        snapshot = snap(CreateSnapshotCommand("snap-1", volume(provision, storage)))
        delete = DeleteSnapshot(storage, locks, events)
        delete(DeleteSnapshotCommand(str(snapshot.snapshot_id)))
        delete(DeleteSnapshotCommand(str(snapshot.snapshot_id)))
        delete(DeleteSnapshotCommand("reallyfakesnapshotid"))
        assert storage.snapshot_records == {} and storage.archives == {}
        assert events.events == [Event.SNAPSHOT_CREATED, Event.SNAPSHOT_DELETED]
        with pytest.raises(InvalidArgument):
            delete(DeleteSnapshotCommand(""))

    def test_get_finds_by_id_and_a_missing_one_is_not_found(
        self, provision: CreateVolume, storage: FakeShareStorage, snap: CreateSnapshot
    ) -> None:
        snapshot = snap(CreateSnapshotCommand("snap-1", volume(provision, storage)))
        assert GetSnapshot(storage)(GetSnapshotCommand(str(snapshot.snapshot_id))) == snapshot
        for missing in ("none-exist-id", "nfs1snap#nfs.example#/exports#other"):
            with pytest.raises(NotFound):
                GetSnapshot(storage)(GetSnapshotCommand(missing))
        with pytest.raises(InvalidArgument):
            GetSnapshot(storage)(GetSnapshotCommand(""))

    def test_list_pages_in_id_order_and_a_token_survives_deleting_its_entry(
        self, provision: CreateVolume, storage: FakeShareStorage, snap: CreateSnapshot, locks: VolumeLocks
    ) -> None:
        source = volume(provision, storage)
        ids = [str(snap(CreateSnapshotCommand(f"snap-{n}", source)).snapshot_id) for n in range(5)]
        listing = ListSnapshots(storage, (SHARE,))
        first = listing(ListSnapshotsCommand(max_entries=2))
        assert [str(s.snapshot_id) for s in first.entries] == ids[:2] and first.next_token == ids[1]
        DeleteSnapshot(storage, locks)(DeleteSnapshotCommand(ids[1]))
        rest = listing(ListSnapshotsCommand(starting_token=first.next_token))
        assert [str(s.snapshot_id) for s in rest.entries] == ids[2:] and rest.next_token == ""

    def test_a_token_not_ours_is_aborted(self, storage: FakeShareStorage) -> None:
        with pytest.raises(InvalidToken):  # ABORTED, by the status table
            ListSnapshots(storage, (SHARE,))(ListSnapshotsCommand(starting_token="garbage"))

    def test_a_listed_share_that_is_not_exported_is_unavailable_a_filters_share_is_empty(
        self, storage: FakeShareStorage, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        def not_exported(share: ShareRef) -> list[tuple[str, SnapshotRecord]]:
            raise NotFound(f"{share.source()} is not exported")  # as the adapters answer NFS4ERR_NOENT at the root

        monkeypatch.setattr(storage, "list_snapshot_records", not_exported)
        with pytest.raises(Unavailable):
            ListSnapshots(storage, (SHARE,))(ListSnapshotsCommand())
        page = ListSnapshots(storage)(ListSnapshotsCommand(source_volume_id="nfs1#nfs.example#/exports#pvc-1#delete"))
        assert page.entries == ()

    def test_list_filters_by_snapshot_id_and_by_source_volume_on_its_share(
        self, provision: CreateVolume, storage: FakeShareStorage, snap: CreateSnapshot
    ) -> None:
        one, two = volume(provision, storage, "pvc-1"), volume(provision, storage, "pvc-2")
        a = snap(CreateSnapshotCommand("a", one))
        snap(CreateSnapshotCommand("b", two))
        unlisted = ListSnapshots(storage, ())  # no --shares: a source volume's own share is still looked at
        assert unlisted(ListSnapshotsCommand(source_volume_id=one)).entries == (a,)
        assert unlisted(ListSnapshotsCommand(snapshot_id=str(a.snapshot_id))).entries == (a,)
        assert unlisted(ListSnapshotsCommand(snapshot_id="none-exist-id")).entries == ()
        assert unlisted(ListSnapshotsCommand(source_volume_id="fake-vol-id")).entries == ()
        assert len(ListSnapshots(storage, (SHARE,))(ListSnapshotsCommand()).entries) == 2


class TestRestoreSize:
    def test_is_the_sources_capacity_or_its_content_when_that_is_larger(self) -> None:
        assert restore_size(GIB, PackedSnapshot(archive_bytes=200, content_bytes=5)) == GIB
        assert restore_size(1 << 20, PackedSnapshot(archive_bytes=1 << 20, content_bytes=3 << 20)) == 3 << 20
        assert restore_size(0, PackedSnapshot(archive_bytes=700, content_bytes=500)) == 500

    def test_the_record_keeps_the_restore_size_and_the_archives_apart(
        self, provision: CreateVolume, storage: FakeShareStorage, snap: CreateSnapshot
    ) -> None:
        source = volume(provision, storage, data=b"x" * 100)
        snap(CreateSnapshotCommand("snap-1", source))
        record = storage.snapshot_records[(SHARE, "snap-1")]
        assert (record.size_bytes, record.archive_bytes) == (GIB, 612)
        assert SnapshotRecord.from_json(record.to_json()) == record

    def test_a_volume_from_a_snapshot_is_never_smaller_than_it(
        self, provision: CreateVolume, storage: FakeShareStorage, snap: CreateSnapshot
    ) -> None:
        snapshot = snap(CreateSnapshotCommand("snap-1", volume(provision, storage, data=b"hello")))
        source = ContentSource("snapshot", str(snapshot.snapshot_id))
        # a range below it: OUT_OF_RANGE, with nothing made
        with pytest.raises(OutOfRange):
            provision(CreateVolumeCommand("small", RWX, CapacityRange(1 << 20, GIB - 1), PARAMS, content_source=source))
        assert (SHARE, "small") not in storage.dirs and (SHARE, "small") not in storage.records
        # asking for less with no limit: the snapshot's size; no size at all: the same
        less = provision(CreateVolumeCommand("less", RWX, CapacityRange(1 << 20), PARAMS, content_source=source))
        unsized = provision(CreateVolumeCommand("unsized", RWX, CapacityRange(), PARAMS, content_source=source))
        assert less.capacity_bytes == unsized.capacity_bytes == snapshot.size_bytes == GIB


class TestClones:
    def test_a_volume_from_a_snapshot_holds_the_snapshot_content(
        self, provision: CreateVolume, storage: FakeShareStorage, snap: CreateSnapshot
    ) -> None:
        snapshot = snap(CreateSnapshotCommand("snap-1", volume(provision, storage, data=b"hello")))
        storage.files[(SHARE, "pvc-1/data")] = b"changed later"
        made = provision(clone("restored", "snapshot", str(snapshot.snapshot_id)))
        assert storage.files[(SHARE, "restored/data")] == b"hello"
        record = storage.records[(SHARE, "restored")]
        assert PENDING_KEY not in record.parameters and made.capacity_bytes == GIB

    def test_a_volume_from_a_volume_holds_a_copy(self, provision: CreateVolume, storage: FakeShareStorage) -> None:
        source = volume(provision, storage, data=b"hello")
        provision(clone("copy", "volume", source))
        assert storage.files[(SHARE, "copy/data")] == b"hello"

    @pytest.mark.parametrize(
        ("kind", "source"), [("snapshot", "non-existing-snapshot-id"), ("snapshot", "nfs1snap#nfs.example#/exports#gone"),
                             ("volume", "fake-vol-id"), ("volume", "nfs1#nfs.example#/exports#gone#delete")],
    )  # fmt: skip
    def test_a_missing_source_is_not_found_and_nothing_is_made(
        self, provision: CreateVolume, storage: FakeShareStorage, kind: str, source: str
    ) -> None:
        with pytest.raises(NotFound):
            provision(clone("copy", kind, source))
        assert storage.dirs == {} and storage.records == {}

    def test_a_source_whose_directory_was_replaced_is_not_found_and_nothing_is_made(
        self, provision: CreateVolume, storage: FakeShareStorage, snap: CreateSnapshot
    ) -> None:
        source = volume(provision, storage, data=b"hello")
        del storage.dirs[(SHARE, "pvc-1")]
        storage.planted[(SHARE, "pvc-1")] = "FIFO, socket or device"
        with pytest.raises(NotFound):
            provision(clone("copy", "volume", source))
        with pytest.raises(NotFound):
            snap(CreateSnapshotCommand("snap-1", source))
        assert (SHARE, "copy") not in storage.records and storage.dirs == {} and storage.snapshot_records == {}

    def test_a_retry_with_the_same_source_converges_and_another_source_is_already_exists(
        self, provision: CreateVolume, storage: FakeShareStorage
    ) -> None:
        one, two = volume(provision, storage, "pvc-1", data=b"1"), volume(provision, storage, "pvc-2")
        assert provision(clone("copy", "volume", one)) == provision(clone("copy", "volume", one))
        with pytest.raises(AlreadyExists):
            provision(clone("copy", "volume", two))
        with pytest.raises(AlreadyExists):
            provision(CreateVolumeCommand("copy", RWX, CapacityRange(GIB), PARAMS))

    def test_an_interrupted_clone_stays_pending_and_a_retry_completes_it(
        self, provision: CreateVolume, storage: FakeShareStorage
    ) -> None:
        source = volume(provision, storage, a=b"1", b=b"2", c=b"3", d=b"4")
        storage.fail_next_fill = DeadlineExceeded("copy took too long")
        with pytest.raises(DeadlineExceeded):
            provision(clone("copy", "volume", source))
        assert storage.records[(SHARE, "copy")].parameters[PENDING_KEY] == "true"  # not complete, and says so
        with pytest.raises(NotFound):  # a pending volume is no source for another clone
            provision(clone("copy-2", "volume", "nfs1#nfs.example#/exports#copy#delete"))
        provision(clone("copy", "volume", source))
        assert {k[1]: v for k, v in storage.files.items() if k[1].startswith("copy/")} == {
            "copy/a": b"1", "copy/b": b"2", "copy/c": b"3", "copy/d": b"4"
        }
        assert PENDING_KEY not in storage.records[(SHARE, "copy")].parameters

    @pytest.mark.parametrize(
        "refusal",
        [
            InvalidArgument("archive member '../x' is absolute or contains '..'"),
            FailedPrecondition("the volume holds a symbolic link 'l' -> '/etc' pointing outside it"),
        ],
        ids=["unsafe", "unrestorable"],
    )
    def test_a_source_refused_leaves_nothing_half_copied(
        self, provision: CreateVolume, storage: FakeShareStorage, refusal: Exception
    ) -> None:
        source = volume(provision, storage, a=b"1", b=b"2", c=b"3", d=b"4")
        storage.fail_next_fill = refusal
        with pytest.raises(type(refusal)):
            provision(clone("copy", "volume", source))
        assert (SHARE, "copy") not in storage.records and (SHARE, "copy") not in storage.dirs
        assert not any(path.startswith("copy/") for _, path in storage.files)

    def test_a_pending_clone_whose_source_went_away_is_removed_not_kept_forever(
        self, provision: CreateVolume, storage: FakeShareStorage
    ) -> None:
        source = volume(provision, storage, a=b"1", b=b"2", c=b"3", d=b"4")
        storage.fail_next_fill = DeadlineExceeded("copy took too long")
        with pytest.raises(DeadlineExceeded):
            provision(clone("copy", "volume", source))
        DeleteVolume(storage, VolumeLocks(), FakeClock())(DeleteVolumeCommand(source))
        with pytest.raises(NotFound):
            provision(clone("copy", "volume", source))
        assert (SHARE, "copy") not in storage.records and (SHARE, "copy") not in storage.dirs
        assert not any(path.startswith("copy/") for _, path in storage.files)

    def test_the_source_volume_is_held_while_it_is_copied(
        self, provision: CreateVolume, storage: FakeShareStorage, locks: VolumeLocks
    ) -> None:
        source = volume(provision, storage)
        with locks.hold(source):
            with pytest.raises(OperationInFlight):
                provision(clone("copy", "volume", source))
