"""Publish and unpublish, against fakes."""

from __future__ import annotations

import pytest

from domain.errors import AlreadyExists, DeadlineExceeded, InvalidArgument, NotFound, OperationInFlight, Unavailable
from domain.errors import FailedPrecondition
from domain.events import Event
from domain.locks import VolumeLocks
from domain.model import AccessMode, MountOptionAllowlist, OnDelete, Publication, ShareRef, VolumeCapability, VolumeId
from domain.usecases.node import NodePublishVolume, NodePublishVolumeCommand, NodeUnpublishVolume, NodeUnpublishVolumeCommand
from domain.usecases.probe import Probe
from tests.fakes import FakeMounter, FakePublicationStore


class RecordingEvents:
    def __init__(self) -> None:
        self.events: list[Event] = []

    def emit(self, event: Event) -> None:
        self.events.append(event)

VOLUME = str(VolumeId(ShareRef("nfs.example", "/exports"), "team/pvc-1", OnDelete.DELETE))
TARGET = "/var/lib/kubelet/pods/uid/volumes/kubernetes.io~csi/pv/mount"
RWX = VolumeCapability(AccessMode.MULTI_NODE_MULTI_WRITER, mount_flags=("nfsvers=4.1", "hard"))


@pytest.fixture
def mounter() -> FakeMounter:
    return FakeMounter()


@pytest.fixture
def store() -> FakePublicationStore:
    return FakePublicationStore()


@pytest.fixture
def locks() -> VolumeLocks:
    return VolumeLocks()


@pytest.fixture
def publish(mounter: FakeMounter, store: FakePublicationStore, locks: VolumeLocks) -> NodePublishVolume:
    return NodePublishVolume(mounter, store, locks)


@pytest.fixture
def unpublish(mounter: FakeMounter, store: FakePublicationStore, locks: VolumeLocks) -> NodeUnpublishVolume:
    return NodeUnpublishVolume(mounter, store, locks)


def request(**changes: object) -> NodePublishVolumeCommand:
    fields: dict[str, object] = {"volume_id": VOLUME, "target_path": TARGET, "capability": RWX}
    fields.update(changes)
    return NodePublishVolumeCommand(**fields)  # type: ignore[arg-type]


class TestPublish:
    def test_mounts_the_volume_directory_with_the_capability_flags(self, publish: NodePublishVolume, mounter: FakeMounter) -> None:
        publish(request())
        assert mounter.mounts == {TARGET: ("nfs.example:/exports/team/pvc-1", ("nfsvers=4.1", "hard"))}
        assert TARGET in mounter.targets

    def test_readonly_adds_ro(self, publish: NodePublishVolume, mounter: FakeMounter) -> None:
        publish(request(readonly=True))
        assert mounter.mounts[TARGET][1] == ("nfsvers=4.1", "hard", "ro")

    def test_a_reader_only_access_mode_mounts_read_only(self, publish: NodePublishVolume, mounter: FakeMounter) -> None:
        publish(request(capability=VolumeCapability(AccessMode.MULTI_NODE_READER_ONLY)))
        assert mounter.mounts[TARGET][1] == ("ro",)

    def test_second_publish_with_same_arguments_is_ok(self, publish: NodePublishVolume, mounter: FakeMounter) -> None:
        publish(request())
        publish(request())
        assert len(mounter.mounts) == 1

    def test_same_target_with_other_arguments_is_already_exists(self, publish: NodePublishVolume, mounter: FakeMounter) -> None:
        publish(request())
        with pytest.raises(AlreadyExists):
            publish(request(readonly=True))
        assert mounter.mounts[TARGET][1] == ("nfsvers=4.1", "hard")

    def test_a_target_mounted_by_someone_else_is_already_exists(self, publish: NodePublishVolume, mounter: FakeMounter) -> None:
        mounter.mounts[TARGET] = ("other:/x", ())
        with pytest.raises(AlreadyExists):
            publish(request())

    def test_a_recorded_publication_that_lost_its_mount_is_mounted_again(
        self, publish: NodePublishVolume, mounter: FakeMounter
    ) -> None:
        publish(request())
        mounter.mounts.clear()
        publish(request())
        assert TARGET in mounter.mounts

    def test_unknown_volume_is_not_found(self, publish: NodePublishVolume, mounter: FakeMounter) -> None:
        with pytest.raises(NotFound):
            publish(request(volume_id="fake-vol-id-1"))
        assert mounter.mounts == {} and mounter.targets == set()

    @pytest.mark.parametrize(
        "changes",
        [
            {"volume_id": ""},
            {"target_path": ""},
            {"target_path": "relative/path"},
            {"target_path": "/var/lib/../../etc"},
            {"capability": None},
            {"capability": VolumeCapability(AccessMode.SINGLE_NODE_WRITER, block=True)},
            {"capability": VolumeCapability(AccessMode.SINGLE_NODE_WRITER, mount_flags=("ro,exec",))},
            {"capability": VolumeCapability(AccessMode.SINGLE_NODE_WRITER, mount_flags=("bind",))},
            {"capability": VolumeCapability(AccessMode.SINGLE_NODE_WRITER, fs_type="ext4")},
        ],
    )
    def test_bad_requests_are_invalid_argument_and_mount_nothing(
        self, publish: NodePublishVolume, mounter: FakeMounter, changes: dict[str, object]
    ) -> None:
        with pytest.raises(InvalidArgument):
            publish(request(**changes))
        assert mounter.mounts == {} and mounter.targets == set()

    def test_a_failed_mount_leaves_no_target_and_no_record(
        self, publish: NodePublishVolume, mounter: FakeMounter, store: FakePublicationStore
    ) -> None:
        mounter.fail_next_mount = Unavailable("server down")
        with pytest.raises(Unavailable):
            publish(request())
        assert mounter.targets == set() and store.publications == {}
        publish(request())
        assert TARGET in mounter.mounts

    def test_a_concurrent_publish_at_the_same_target_is_aborted(self, publish: NodePublishVolume, locks: VolumeLocks) -> None:
        with locks.hold(f"{VOLUME}@{TARGET}"):
            with pytest.raises(OperationInFlight):
                publish(request())

    def test_another_volume_at_a_target_in_use_is_aborted(self, publish: NodePublishVolume, locks: VolumeLocks) -> None:
        with locks.hold(f"target:{TARGET}"):
            with pytest.raises(OperationInFlight):
                publish(request(volume_id=str(VolumeId(ShareRef("nfs.example", "/exports"), "other", OnDelete.DELETE))))
        assert locks.held() == frozenset()

    def test_the_lock_is_released_after_a_failure(self, publish: NodePublishVolume, mounter: FakeMounter, locks: VolumeLocks) -> None:
        mounter.fail_next_mount = DeadlineExceeded("mount.nfs did not finish within 1 s")
        with pytest.raises(DeadlineExceeded):
            publish(request())
        assert locks.held() == frozenset()

    def test_a_timed_out_mount_keeps_its_record_so_a_retry_or_unpublish_finds_it(
        self, publish: NodePublishVolume, mounter: FakeMounter, store: FakePublicationStore
    ) -> None:
        mounter.fail_next_mount = DeadlineExceeded("mount.nfs did not finish within 1 s")
        with pytest.raises(DeadlineExceeded):
            publish(request())
        assert TARGET in store.publications and TARGET in mounter.targets
        publish(request())
        assert TARGET in mounter.mounts

    def test_a_stale_target_is_unmounted_and_mounted_again_and_reported(
        self, mounter: FakeMounter, store: FakePublicationStore, locks: VolumeLocks
    ) -> None:
        events = RecordingEvents()
        publish = NodePublishVolume(mounter, store, locks, events)
        publish(request())
        mounter.stale.add(TARGET)
        publish(request())
        assert TARGET in mounter.mounts and TARGET not in mounter.stale
        assert events.events == [Event.VOLUME_PUBLISHED, Event.STALE_HANDLE_RECOVERED]
        publish(request())
        assert events.events == [Event.VOLUME_PUBLISHED, Event.STALE_HANDLE_RECOVERED]

    @pytest.mark.parametrize(
        "value, refusal", [("true", "inline ephemeral volumes are disabled"), ("True", "must be"), (" TRUE ", "must be")]
    )
    def test_inline_ephemeral_volumes_are_refused(
        self, publish: NodePublishVolume, mounter: FakeMounter, value: str, refusal: str
    ) -> None:
        """Disabled, kubelet's "true" is refused as an inline volume; any other spelling is refused as a value,
        never served as a persistent volume."""
        with pytest.raises(InvalidArgument, match=refusal):
            publish(request(context={"csi.storage.k8s.io/ephemeral": value}))
        assert mounter.mounts == {} and mounter.targets == set()

    def test_a_persistent_volume_context_is_fine(self, publish: NodePublishVolume, mounter: FakeMounter) -> None:
        publish(request(context={"csi.storage.k8s.io/ephemeral": "false"}))
        assert TARGET in mounter.mounts

    def test_the_root_is_never_a_target(self, publish: NodePublishVolume) -> None:
        with pytest.raises(InvalidArgument, match="must not be '/'"):
            publish(request(target_path="//"))

    def test_mount_options_follow_the_configured_allowlist(
        self, mounter: FakeMounter, store: FakePublicationStore, locks: VolumeLocks
    ) -> None:
        strict = NodePublishVolume(mounter, store, locks, mount_options=MountOptionAllowlist(frozenset({"hard"})))
        with pytest.raises(InvalidArgument, match="allowlist"):
            strict(request())
        strict(request(capability=VolumeCapability(AccessMode.MULTI_NODE_MULTI_WRITER, mount_flags=("hard",))))


RWOP = VolumeCapability(AccessMode.SINGLE_NODE_SINGLE_WRITER)
RWO = VolumeCapability(AccessMode.SINGLE_NODE_MULTI_WRITER)
TARGET_2 = "/var/lib/kubelet/pods/uid2/volumes/kubernetes.io~csi/pv/mount"


class TestSingleWriter:
    def test_a_single_writer_volume_at_a_second_target_is_failed_precondition_with_nothing_made(
        self, publish: NodePublishVolume, mounter: FakeMounter, store: FakePublicationStore
    ) -> None:
        publish(request(capability=RWOP))
        with pytest.raises(FailedPrecondition, match=f"single-writer.*already published at {TARGET}"):
            publish(request(capability=RWOP, target_path=TARGET_2))
        assert list(mounter.mounts) == [TARGET] and TARGET_2 not in mounter.targets and list(store.publications) == [TARGET]

    def test_a_repeat_at_the_same_target_is_ok(self, publish: NodePublishVolume, mounter: FakeMounter) -> None:
        publish(request(capability=RWOP))
        publish(request(capability=RWOP))
        assert list(mounter.mounts) == [TARGET]

    @pytest.mark.parametrize(("first", "second"), [(RWOP, RWO), (RWO, RWOP), (RWOP, RWX)])
    def test_either_side_being_single_writer_refuses_the_second(
        self, publish: NodePublishVolume, mounter: FakeMounter, first: VolumeCapability, second: VolumeCapability
    ) -> None:
        publish(request(capability=first))
        with pytest.raises(FailedPrecondition):
            publish(request(capability=second, target_path=TARGET_2))
        assert list(mounter.mounts) == [TARGET]

    def test_a_single_node_multi_writer_volume_is_published_at_many_targets(
        self, publish: NodePublishVolume, mounter: FakeMounter
    ) -> None:
        publish(request(capability=RWO))
        publish(request(capability=RWO, target_path=TARGET_2))
        assert sorted(mounter.mounts) == sorted([TARGET, TARGET_2])

    def test_once_unpublished_it_may_be_published_elsewhere(
        self, publish: NodePublishVolume, unpublish: NodeUnpublishVolume, mounter: FakeMounter
    ) -> None:
        publish(request(capability=RWOP))
        unpublish(NodeUnpublishVolumeCommand(VOLUME, TARGET))
        publish(request(capability=RWOP, target_path=TARGET_2))
        assert list(mounter.mounts) == [TARGET_2]

    def test_other_volumes_do_not_count(self, publish: NodePublishVolume, mounter: FakeMounter) -> None:
        other = str(VolumeId(ShareRef("nfs.example", "/exports"), "team/pvc-2", OnDelete.DELETE))
        publish(request(capability=RWOP))
        publish(request(capability=RWOP, volume_id=other, target_path=TARGET_2))
        assert sorted(mounter.mounts) == sorted([TARGET, TARGET_2])

    def test_the_record_keeps_the_single_writer_mark_and_an_unmarked_record_is_the_same_mount(
        self, publish: NodePublishVolume, mounter: FakeMounter, store: FakePublicationStore
    ) -> None:
        publish(request(capability=RWOP))
        assert store.publications[TARGET].single_writer
        # Given a record written before the mark was kept, when the CO repeats the publish, then it is the same
        store.publications[TARGET] = Publication(VOLUME, TARGET, "nfs.example:/exports/team/pvc-1", ())
        publish(request(capability=RWOP))
        assert list(mounter.mounts) == [TARGET]


class TestUnpublish:
    def test_unmounts_and_removes_the_target(
        self, publish: NodePublishVolume, unpublish: NodeUnpublishVolume, mounter: FakeMounter, store: FakePublicationStore
    ) -> None:
        publish(request())
        unpublish(NodeUnpublishVolumeCommand(VOLUME, TARGET))
        assert mounter.mounts == {} and mounter.targets == set() and store.publications == {}

    def test_nothing_mounted_is_ok(self, unpublish: NodeUnpublishVolume) -> None:
        unpublish(NodeUnpublishVolumeCommand(VOLUME, TARGET))
        unpublish(NodeUnpublishVolumeCommand(VOLUME, TARGET))

    def test_unknown_volume_is_not_found_but_the_target_is_still_removed(
        self, unpublish: NodeUnpublishVolume, mounter: FakeMounter
    ) -> None:
        mounter.targets.add(TARGET)
        with pytest.raises(NotFound):
            unpublish(NodeUnpublishVolumeCommand("fake-vol-id-1", TARGET))
        assert TARGET not in mounter.targets

    @pytest.mark.parametrize("volume_id,target", [("", TARGET), (VOLUME, ""), (VOLUME, "x/../y"), (VOLUME, "/")])
    def test_missing_fields_are_invalid_argument(self, unpublish: NodeUnpublishVolume, volume_id: str, target: str) -> None:
        with pytest.raises(InvalidArgument):
            unpublish(NodeUnpublishVolumeCommand(volume_id, target))

    def test_a_mount_point_this_driver_did_not_publish_is_never_unmounted(
        self, unpublish: NodeUnpublishVolume, mounter: FakeMounter
    ) -> None:
        mounter.mounts[TARGET] = ("someone:/else", ())
        mounter.targets.add(TARGET)
        with pytest.raises(FailedPrecondition, match="no record of publishing"):
            unpublish(NodeUnpublishVolumeCommand(VOLUME, TARGET))
        assert TARGET in mounter.mounts and TARGET in mounter.targets

    def test_a_target_holding_another_volume_is_left_alone(
        self, publish: NodePublishVolume, unpublish: NodeUnpublishVolume, mounter: FakeMounter, store: FakePublicationStore
    ) -> None:
        publish(request())
        other = str(VolumeId(ShareRef("nfs.example", "/exports"), "other", OnDelete.DELETE))
        with pytest.raises(FailedPrecondition, match="holds another volume"):
            unpublish(NodeUnpublishVolumeCommand(other, TARGET))
        assert TARGET in mounter.mounts and store.publications[TARGET].volume_id == VOLUME

    def test_a_stale_target_is_unmounted_and_removed(
        self, publish: NodePublishVolume, unpublish: NodeUnpublishVolume, mounter: FakeMounter, store: FakePublicationStore
    ) -> None:
        publish(request())
        mounter.stale.add(TARGET)
        unpublish(NodeUnpublishVolumeCommand(VOLUME, TARGET))
        assert mounter.mounts == {} and mounter.targets == set() and store.publications == {}

    def test_a_record_left_by_a_timed_out_publish_is_cleaned_up(
        self, unpublish: NodeUnpublishVolume, mounter: FakeMounter, store: FakePublicationStore
    ) -> None:
        store.put(Publication(VOLUME, TARGET, "nfs.example:/exports/team/pvc-1", ()))
        mounter.targets.add(TARGET)
        unpublish(NodeUnpublishVolumeCommand(VOLUME, TARGET))
        assert store.publications == {} and mounter.targets == set()


class TestProbe:
    def test_ready_when_the_mount_helper_is_present(self, mounter: FakeMounter) -> None:
        Probe(mounter)()

    def test_failed_precondition_when_the_mount_helper_is_missing(self, mounter: FakeMounter) -> None:
        mounter.ready = False
        with pytest.raises(FailedPrecondition):
            Probe(mounter)()


class TestStaticAndInline:
    STATIC = {"server": "nfs.example", "share": "/exports", "subDir": "team", "mountOptions": "hard"}

    def test_a_handle_not_of_ours_is_published_from_its_context(self, publish: NodePublishVolume, mounter: FakeMounter) -> None:
        publish(request(volume_id="any-admin-handle", context=self.STATIC))
        assert mounter.mounts[TARGET] == ("nfs.example:/exports/team", ("nfsvers=4.1", "hard"))

    def test_unpublishing_a_static_volume_twice_is_ok(self, publish: NodePublishVolume, unpublish: NodeUnpublishVolume, mounter: FakeMounter) -> None:
        publish(request(volume_id="any-admin-handle", context=self.STATIC))
        unpublish(NodeUnpublishVolumeCommand("any-admin-handle", TARGET))
        unpublish(NodeUnpublishVolumeCommand("any-admin-handle", TARGET))  # a retry after a lost reply
        assert mounter.mounts == {} and mounter.targets == set()

    def test_inline_volumes_are_refused_unless_enabled(self, mounter: FakeMounter, store: FakePublicationStore, locks: VolumeLocks) -> None:
        inline = request(volume_id="csi-1", context={**self.STATIC, "csi.storage.k8s.io/ephemeral": "true"})
        with pytest.raises(InvalidArgument, match="--enable-inline-volumes"):
            NodePublishVolume(mounter, store, locks)(inline)
        NodePublishVolume(mounter, store, locks, inline_volumes=True)(inline)
        assert mounter.mounts[TARGET][0] == "nfs.example:/exports/team"
