"""Stage, unstage, publish from a staging mount, volume stats and node capabilities, against fakes."""

from __future__ import annotations

import pytest

from domain.errors import AlreadyExists, DeadlineExceeded, FailedPrecondition, InvalidArgument, NotFound, OutOfRange
from domain.identity import node_capabilities
from domain.locks import VolumeLocks
from domain.model import (
    AccessMode,
    CapacityRange,
    FilesystemUsage,
    OnDelete,
    Publication,
    ShareRef,
    TreeUsage,
    VolumeCapability,
    VolumeId,
)
from domain.usecases.node import NodePublishVolume, NodePublishVolumeCommand, NodeUnpublishVolume, NodeUnpublishVolumeCommand
from domain.usecases.stage import NodeStageVolume, NodeStageVolumeCommand, NodeUnstageVolume, NodeUnstageVolumeCommand
from domain.usecases.stats import NodeExpandVolume, NodeExpandVolumeCommand, NodeGetVolumeStats, NodeGetVolumeStatsCommand
from tests.fakes import FakeMounter, FakePublicationStore, FakeUsageMeter

VOLUME = str(VolumeId(ShareRef("nfs.example", "/exports"), "team/pvc-1", OnDelete.DELETE))
STAGING = "/var/lib/kubelet/plugins/kubernetes.io/csi/nfs.csi.ownedstorage.dev/abc/globalmount"
TARGET = "/var/lib/kubelet/pods/uid/volumes/kubernetes.io~csi/pv/mount"
TARGET_2 = "/var/lib/kubelet/pods/uid2/volumes/kubernetes.io~csi/pv/mount"
RWX = VolumeCapability(AccessMode.MULTI_NODE_MULTI_WRITER, mount_flags=("nfsvers=4.1", "hard"))
SOURCE = "nfs.example:/exports/team/pvc-1"


class Node:
    """One node in stage mode: the use cases over shared fakes."""

    def __init__(self) -> None:
        self.mounter = FakeMounter()
        self.publications = FakePublicationStore()
        self.stagings = FakePublicationStore()
        self.locks = VolumeLocks()
        self.stage = NodeStageVolume(self.mounter, self.stagings, self.locks)
        self.unstage = NodeUnstageVolume(self.mounter, self.stagings, self.locks, self.publications)
        self.publish = NodePublishVolume(self.mounter, self.publications, self.locks, stagings=self.stagings, inline_volumes=True)
        self.unpublish = NodeUnpublishVolume(self.mounter, self.publications, self.locks, stagings=self.stagings)
        self.stats = NodeGetVolumeStats(self.mounter, self.publications, self.stagings)


@pytest.fixture
def node() -> Node:
    return Node()


def stage_request(**changes: object) -> NodeStageVolumeCommand:
    fields: dict[str, object] = {"volume_id": VOLUME, "staging_target_path": STAGING, "capability": RWX}
    fields.update(changes)
    return NodeStageVolumeCommand(**fields)  # type: ignore[arg-type]


def publish_request(**changes: object) -> NodePublishVolumeCommand:
    fields: dict[str, object] = {
        "volume_id": VOLUME, "target_path": TARGET, "capability": RWX, "staging_target_path": STAGING,
    }  # fmt: skip
    fields.update(changes)
    return NodePublishVolumeCommand(**fields)  # type: ignore[arg-type]


class TestStage:
    def test_mounts_the_volume_once_at_the_staging_path_and_records_it(self, node: Node) -> None:
        node.stage(stage_request())
        assert node.mounter.mounts == {STAGING: (SOURCE, ("nfsvers=4.1", "hard"))}
        assert node.stagings.get(STAGING) == Publication(VOLUME, STAGING, SOURCE, ("nfsvers=4.1", "hard"))
        assert node.publications.publications == {}

    def test_staging_again_identically_is_ok_and_mounts_nothing_more(self, node: Node) -> None:
        node.stage(stage_request())
        node.mounter.fail_next_mount = AssertionError("mounted twice")
        node.stage(stage_request())
        assert list(node.mounter.mounts) == [STAGING]

    def test_staging_with_other_arguments_is_already_exists_and_leaves_the_mount(self, node: Node) -> None:
        node.stage(stage_request())
        with pytest.raises(AlreadyExists):
            node.stage(stage_request(capability=VolumeCapability(AccessMode.MULTI_NODE_MULTI_WRITER)))
        assert node.mounter.mounts[STAGING] == (SOURCE, ("nfsvers=4.1", "hard"))

    def test_another_volume_at_a_staging_path_in_use_is_already_exists(self, node: Node) -> None:
        node.stage(stage_request())
        other = str(VolumeId(ShareRef("nfs.example", "/exports"), "team/pvc-2", OnDelete.DELETE))
        with pytest.raises(AlreadyExists):
            node.stage(stage_request(volume_id=other))

    def test_a_reader_only_access_mode_stages_read_only(self, node: Node) -> None:
        node.stage(stage_request(capability=VolumeCapability(AccessMode.MULTI_NODE_READER_ONLY)))
        assert node.mounter.mounts[STAGING] == (SOURCE, ("ro",))

    def test_a_stale_staging_mount_is_mounted_again_on_retry(self, node: Node) -> None:
        node.stage(stage_request())
        node.mounter.stale.add(STAGING)
        node.stage(stage_request())
        assert STAGING in node.mounter.mounts and STAGING not in node.mounter.stale

    def test_a_recorded_staging_that_lost_its_mount_is_mounted_again(self, node: Node) -> None:
        # Given a node that rebooted: the record survived, the mount did not
        node.stage(stage_request())
        node.mounter.mounts.clear()
        node.stage(stage_request())
        assert node.mounter.mounts[STAGING][0] == SOURCE

    def test_a_failed_mount_leaves_no_record_and_kubelets_staging_directory(self, node: Node) -> None:
        node.mounter.make_target(STAGING)  # the CO makes the staging path before it calls NodeStageVolume
        node.mounter.fail_next_mount = NotFound("no such export")
        with pytest.raises(NotFound):
            node.stage(stage_request())
        assert node.stagings.publications == {} and node.mounter.mounts == {}
        assert STAGING in node.mounter.targets

    def test_a_failed_mount_at_a_staging_path_it_had_to_make_leaves_nothing(self, node: Node) -> None:
        node.mounter.fail_next_mount = NotFound("no such export")
        with pytest.raises(NotFound):
            node.stage(stage_request())
        assert node.stagings.publications == {} and node.mounter.targets == set()

    def test_a_timed_out_mount_keeps_its_record_for_the_retry(self, node: Node) -> None:
        node.mounter.fail_next_mount = DeadlineExceeded("mount.nfs did not finish")
        with pytest.raises(DeadlineExceeded):
            node.stage(stage_request())
        assert STAGING in node.stagings.publications
        node.stage(stage_request())
        assert STAGING in node.mounter.mounts

    @pytest.mark.parametrize(
        "changes",
        [
            {"volume_id": ""},
            {"staging_target_path": ""},
            {"staging_target_path": "relative"},
            {"staging_target_path": "/a/../../etc"},
            {"capability": None},
            {"capability": VolumeCapability(AccessMode.SINGLE_NODE_WRITER, block=True)},
            {"capability": VolumeCapability(AccessMode.SINGLE_NODE_WRITER, mount_flags=("bind",))},
            {"context": {"csi.storage.k8s.io/ephemeral": "true", "server": "s", "share": "/e"}},
        ],
    )
    def test_bad_requests_are_invalid_argument_and_mount_nothing(self, node: Node, changes: dict[str, object]) -> None:
        with pytest.raises(InvalidArgument):
            node.stage(stage_request(**changes))
        assert node.mounter.mounts == {} and node.stagings.publications == {}

    def test_an_unknown_volume_is_not_found(self, node: Node) -> None:
        with pytest.raises(NotFound):
            node.stage(stage_request(volume_id="fake-vol-id-1"))

    def test_a_static_volume_is_staged_from_its_context(self, node: Node) -> None:
        node.stage(stage_request(volume_id="static-1", context={"server": "nfs.example", "share": "/exports"}))
        assert node.mounter.mounts[STAGING] == ("nfs.example:/exports", ("nfsvers=4.1", "hard"))


class TestUnstage:
    def test_unmounts_and_forgets_the_staging_but_leaves_the_directory(self, node: Node) -> None:
        node.stage(stage_request())
        node.unstage(NodeUnstageVolumeCommand(VOLUME, STAGING))
        assert node.mounter.mounts == {} and node.stagings.publications == {}
        assert STAGING in node.mounter.targets  # the CO's directory

    def test_unstaging_twice_or_what_was_never_staged_is_ok(self, node: Node) -> None:
        node.unstage(NodeUnstageVolumeCommand(VOLUME, STAGING))
        node.stage(stage_request())
        node.unstage(NodeUnstageVolumeCommand(VOLUME, STAGING))
        node.unstage(NodeUnstageVolumeCommand(VOLUME, STAGING))
        assert node.mounter.mounts == {}

    def test_a_mount_point_this_driver_did_not_stage_is_never_unmounted(self, node: Node) -> None:
        node.mounter.mounts[STAGING] = ("other:/x", ())
        with pytest.raises(FailedPrecondition):
            node.unstage(NodeUnstageVolumeCommand(VOLUME, STAGING))
        assert STAGING in node.mounter.mounts

    def test_a_staging_path_holding_another_volume_is_left_alone(self, node: Node) -> None:
        node.stage(stage_request())
        with pytest.raises(FailedPrecondition):
            node.unstage(NodeUnstageVolumeCommand("other-volume", STAGING))
        assert STAGING in node.mounter.mounts

    @pytest.mark.parametrize(("volume_id", "path"), [("", STAGING), (VOLUME, ""), (VOLUME, "relative")])
    def test_missing_fields_are_invalid_argument(self, node: Node, volume_id: str, path: str) -> None:
        with pytest.raises(InvalidArgument):
            node.unstage(NodeUnstageVolumeCommand(volume_id, path))


class TestPublishFromStaging:
    def test_binds_the_staging_mount_into_each_target_read_only_when_asked(self, node: Node) -> None:
        node.stage(stage_request())
        node.publish(publish_request())
        node.publish(publish_request(target_path=TARGET_2, readonly=True))
        assert node.mounter.mounts[TARGET] == (STAGING, ("bind",))
        assert node.mounter.mounts[TARGET_2] == (STAGING, ("bind", "ro"))
        assert [source for source, _ in node.mounter.mounts.values()].count(SOURCE) == 1

    def test_publishing_again_identically_is_ok_and_otherwise_already_exists(self, node: Node) -> None:
        node.stage(stage_request())
        node.publish(publish_request())
        node.publish(publish_request())
        with pytest.raises(AlreadyExists):
            node.publish(publish_request(readonly=True))
        assert node.mounter.mounts[TARGET] == (STAGING, ("bind",))

    def test_an_empty_staging_path_is_failed_precondition(self, node: Node) -> None:
        with pytest.raises(FailedPrecondition, match="staging_target_path is required"):
            node.publish(publish_request(staging_target_path=""))
        assert node.mounter.mounts == {}

    def test_a_volume_not_staged_there_is_failed_precondition(self, node: Node) -> None:
        with pytest.raises(FailedPrecondition, match="not staged"):
            node.publish(publish_request())
        node.stage(stage_request())
        node.mounter.mounts.clear()  # the staging mount is gone (a reboot)
        with pytest.raises(FailedPrecondition, match="not staged"):
            node.publish(publish_request())

    def test_a_stale_staging_mount_is_mounted_again_before_a_pod_binds_to_it(self, node: Node) -> None:
        # Given a staged volume whose server restarted (kubelet does not stage it again while it is staged)
        node.stage(stage_request())
        node.mounter.stale.add(STAGING)
        # When a pod publishes it, then the staging mount is made afresh, and the pod binds the fresh one
        node.publish(publish_request())
        assert STAGING not in node.mounter.stale
        assert node.mounter.mounts[STAGING] == (SOURCE, ("nfsvers=4.1", "hard"))
        assert node.mounter.mounts[TARGET] == (STAGING, ("bind",))

    def test_inline_volumes_are_mounted_directly(self, node: Node) -> None:
        context = {"csi.storage.k8s.io/ephemeral": "true", "server": "nfs.example", "share": "/exports"}
        node.publish(publish_request(volume_id="csi-inline-1", staging_target_path="", context=context))
        assert node.mounter.mounts[TARGET] == ("nfs.example:/exports", ("nfsvers=4.1", "hard"))

    def test_unpublish_unmounts_the_bind_and_leaves_the_staging_mount(self, node: Node) -> None:
        node.stage(stage_request())
        node.publish(publish_request())
        node.unpublish(NodeUnpublishVolumeCommand(VOLUME, TARGET))
        assert list(node.mounter.mounts) == [STAGING] and TARGET not in node.mounter.targets

    def test_unpublish_never_touches_a_staging_mount(self, node: Node) -> None:
        node.stage(stage_request())
        with pytest.raises(FailedPrecondition):
            node.unpublish(NodeUnpublishVolumeCommand(VOLUME, STAGING))
        assert STAGING in node.mounter.mounts


class TestSingleWriterInStageMode:
    RWOP = VolumeCapability(AccessMode.SINGLE_NODE_SINGLE_WRITER)

    def test_a_second_target_bound_from_the_same_staging_mount_is_failed_precondition(self, node: Node) -> None:
        node.stage(stage_request(capability=self.RWOP))
        node.publish(publish_request(capability=self.RWOP))
        with pytest.raises(FailedPrecondition, match="single-writer"):
            node.publish(publish_request(capability=self.RWOP, target_path=TARGET_2))
        assert sorted(node.mounter.mounts) == sorted([STAGING, TARGET]) and TARGET_2 not in node.mounter.targets

    def test_a_second_staging_path_is_failed_precondition(self, node: Node) -> None:
        node.stage(stage_request(capability=self.RWOP))
        with pytest.raises(FailedPrecondition, match=f"already staged at {STAGING}"):
            node.stage(stage_request(capability=self.RWOP, staging_target_path=STAGING + "-2"))
        assert list(node.mounter.mounts) == [STAGING]

    def test_staging_again_at_the_same_path_is_ok(self, node: Node) -> None:
        node.stage(stage_request(capability=self.RWOP))
        node.stage(stage_request(capability=self.RWOP))
        assert list(node.mounter.mounts) == [STAGING]


class TestVolumeStats:
    def test_reports_the_usage_of_a_published_volume_and_a_healthy_condition(self, node: Node) -> None:
        node.stage(stage_request())
        node.publish(publish_request())
        stats = node.stats(NodeGetVolumeStatsCommand(VOLUME, TARGET))
        assert stats.usage == node.mounter.usage and not stats.abnormal

    def test_the_staging_path_is_a_volume_path_too(self, node: Node) -> None:
        node.stage(stage_request())
        assert node.stats(NodeGetVolumeStatsCommand(VOLUME, STAGING + "/")).usage == node.mounter.usage

    @pytest.mark.parametrize(("volume_id", "path"), [("", TARGET), (VOLUME, "")])
    def test_missing_fields_are_invalid_argument(self, node: Node, volume_id: str, path: str) -> None:
        with pytest.raises(InvalidArgument):
            node.stats(NodeGetVolumeStatsCommand(volume_id, path))

    @pytest.mark.parametrize("path", ["some/path", "/nowhere", TARGET_2, "/a/../etc"])
    def test_a_path_where_the_volume_is_not_is_not_found(self, node: Node, path: str) -> None:
        node.stage(stage_request())
        node.publish(publish_request())
        with pytest.raises(NotFound):
            node.stats(NodeGetVolumeStatsCommand(VOLUME, path))

    def test_another_volumes_path_is_not_found(self, node: Node) -> None:
        node.stage(stage_request())
        node.publish(publish_request())
        with pytest.raises(NotFound):
            node.stats(NodeGetVolumeStatsCommand("fake-vol-id-1", TARGET))

    def test_a_hung_mount_is_abnormal_with_the_last_usage_measured(self, node: Node) -> None:
        node.stage(stage_request())
        node.publish(publish_request())
        node.stats(NodeGetVolumeStatsCommand(VOLUME, TARGET))
        node.mounter.usage = FilesystemUsage(1, 1, 0, 1, 1, 0)
        node.mounter.hung.add(TARGET)
        stats = node.stats(NodeGetVolumeStatsCommand(VOLUME, TARGET))
        assert stats.abnormal and "did not finish" in stats.message
        assert stats.usage == FilesystemUsage(10 << 30, 6 << 30, 4 << 30, 1000, 900, 100)

    def test_a_stale_mount_is_abnormal_with_a_message_not_an_error(self, node: Node) -> None:
        node.stage(stage_request())
        node.mounter.stale.add(STAGING)
        stats = node.stats(NodeGetVolumeStatsCommand(VOLUME, STAGING))
        assert stats.abnormal and "Stale file handle" in stats.message and stats.usage is None

    def test_a_recorded_volume_whose_mount_is_gone_is_abnormal(self, node: Node) -> None:
        node.stage(stage_request())
        node.mounter.mounts.clear()
        stats = node.stats(NodeGetVolumeStatsCommand(VOLUME, STAGING))
        assert stats.abnormal and "no longer a mount point" in stats.message

    def test_without_stage_mode_only_publications_count(self) -> None:
        mounter, publications = FakeMounter(), FakePublicationStore()
        NodePublishVolume(mounter, publications, VolumeLocks())(publish_request(staging_target_path=""))
        stats = NodeGetVolumeStats(mounter, publications)
        assert stats(NodeGetVolumeStatsCommand(VOLUME, TARGET)).usage == mounter.usage


GIB = 1 << 30
SIZED = {"capacityBytes": str(GIB)}


class TestPerVolumeUsage:
    @pytest.fixture
    def meter(self) -> FakeUsageMeter:
        return FakeUsageMeter()

    @pytest.fixture
    def direct(self, meter: FakeUsageMeter) -> tuple[FakeMounter, NodePublishVolume, NodeGetVolumeStats]:
        mounter, publications = FakeMounter(), FakePublicationStore()
        publish = NodePublishVolume(mounter, publications, VolumeLocks())
        return mounter, publish, NodeGetVolumeStats(mounter, publications, meter=meter)

    def test_a_volume_of_known_capacity_reports_its_own_bytes_and_inodes_against_it(
        self, direct: tuple[FakeMounter, NodePublishVolume, NodeGetVolumeStats], meter: FakeUsageMeter
    ) -> None:
        mounter, publish, stats = direct
        publish(publish_request(staging_target_path="", context=SIZED))
        meter.trees[SOURCE] = TreeUsage(used_bytes=300 << 20, used_inodes=42, age_seconds=17)
        answer = stats(NodeGetVolumeStatsCommand(VOLUME, TARGET))
        assert answer.usage == FilesystemUsage(GIB, GIB - (300 << 20), 300 << 20, 42 + 900, 900, 42)
        assert not answer.abnormal and "measured 17 s ago" in answer.message
        assert meter.asked == [(SOURCE, TARGET, "nfs.example", GIB)]

    def test_a_volume_over_its_capacity_has_nothing_available_and_a_limited_walk_says_at_least(
        self, direct: tuple[FakeMounter, NodePublishVolume, NodeGetVolumeStats], meter: FakeUsageMeter
    ) -> None:
        _, publish, stats = direct
        publish(publish_request(staging_target_path="", context=SIZED))
        meter.trees[SOURCE] = TreeUsage(used_bytes=3 * GIB, used_inodes=7, age_seconds=1, complete=False)
        answer = stats(NodeGetVolumeStatsCommand(VOLUME, TARGET))
        assert answer.usage is not None and (answer.usage.total_bytes, answer.usage.available_bytes) == (GIB, 0)
        assert answer.message.startswith("at least")

    def test_until_a_first_walk_finishes_the_figures_are_the_shares_and_say_so(
        self, direct: tuple[FakeMounter, NodePublishVolume, NodeGetVolumeStats]
    ) -> None:
        mounter, publish, stats = direct
        publish(publish_request(staging_target_path="", context=SIZED))
        answer = stats(NodeGetVolumeStatsCommand(VOLUME, TARGET))
        assert answer.usage == mounter.usage and "not measured yet" in answer.message and not answer.abnormal

    def test_a_volume_of_unknown_capacity_reports_its_shares_figures_and_is_not_walked(
        self, direct: tuple[FakeMounter, NodePublishVolume, NodeGetVolumeStats], meter: FakeUsageMeter
    ) -> None:
        mounter, publish, stats = direct
        publish(publish_request(staging_target_path=""))
        assert stats(NodeGetVolumeStatsCommand(VOLUME, TARGET)).usage == mounter.usage and meter.asked == []

    def test_a_hung_mount_is_abnormal_as_before_and_no_walk_is_asked_for(
        self, direct: tuple[FakeMounter, NodePublishVolume, NodeGetVolumeStats], meter: FakeUsageMeter
    ) -> None:
        mounter, publish, stats = direct
        publish(publish_request(staging_target_path="", context=SIZED))
        meter.trees[SOURCE] = TreeUsage(1 << 20, 3, 0)
        healthy = stats(NodeGetVolumeStatsCommand(VOLUME, TARGET)).usage
        mounter.hung.add(TARGET)
        answer = stats(NodeGetVolumeStatsCommand(VOLUME, TARGET))
        assert answer.abnormal and answer.usage == healthy and len(meter.asked) == 1

    def test_in_stage_mode_targets_of_one_volume_share_one_tree_on_the_staging_mounts_server(
        self, meter: FakeUsageMeter
    ) -> None:
        node = Node()
        stats = NodeGetVolumeStats(node.mounter, node.publications, node.stagings, meter)
        node.stage(stage_request(context=SIZED))
        node.publish(publish_request(context=SIZED))
        node.publish(publish_request(target_path=TARGET_2, context=SIZED))
        for target in (TARGET, TARGET_2):
            stats(NodeGetVolumeStatsCommand(VOLUME, target))
        assert meter.asked == [(STAGING, TARGET, "nfs.example", GIB), (STAGING, TARGET_2, "nfs.example", GIB)]

    @pytest.mark.parametrize("value", ["-1", "1e9", "12 ", "0x10", "9" * 20])
    def test_a_malformed_capacity_in_the_context_is_invalid_and_mounts_nothing(
        self, direct: tuple[FakeMounter, NodePublishVolume, NodeGetVolumeStats], value: str
    ) -> None:
        mounter, publish, _ = direct
        with pytest.raises(InvalidArgument, match="capacityBytes"):
            publish(publish_request(staging_target_path="", context={"capacityBytes": value}))
        assert mounter.mounts == {} and mounter.targets == set()


class TestNodeExpandVolume:
    def test_every_record_of_the_volume_learns_the_new_capacity_and_a_later_publish_keeps_it(self) -> None:
        node = Node()
        expand = NodeExpandVolume(node.publications, node.locks, node.stagings)
        node.stage(stage_request(context=SIZED))
        node.publish(publish_request(context=SIZED))
        assert expand(NodeExpandVolumeCommand(VOLUME, TARGET, CapacityRange(3 * GIB))) == 3 * GIB
        assert node.stagings.publications[STAGING].capacity_bytes == 3 * GIB
        assert node.publications.publications[TARGET].capacity_bytes == 3 * GIB
        # a pod started later brings the PersistentVolume's context, written at creation: the larger one stays
        node.publish(publish_request(target_path=TARGET_2, context=SIZED))
        assert node.publications.publications[TARGET_2].capacity_bytes == 3 * GIB

    def test_a_capacity_never_shrinks_and_a_limit_below_it_is_out_of_range(self) -> None:
        node = Node()
        expand = NodeExpandVolume(node.publications, node.locks, node.stagings)
        node.stage(stage_request(context=SIZED))
        assert expand(NodeExpandVolumeCommand(VOLUME, STAGING, CapacityRange(GIB // 2))) == GIB
        assert expand(NodeExpandVolumeCommand(VOLUME, STAGING)) == GIB
        with pytest.raises(OutOfRange):
            expand(NodeExpandVolumeCommand(VOLUME, STAGING, CapacityRange(GIB // 2, GIB // 2)))
        assert node.stagings.publications[STAGING].capacity_bytes == GIB

    @pytest.mark.parametrize(("volume_id", "path"), [("", TARGET), (VOLUME, "")])
    def test_missing_fields_are_invalid_argument(self, volume_id: str, path: str) -> None:
        node = Node()
        with pytest.raises(InvalidArgument):
            NodeExpandVolume(node.publications, node.locks)(NodeExpandVolumeCommand(volume_id, path))

    @pytest.mark.parametrize(("volume_id", "path"), [(VOLUME, "some/path"), (VOLUME, TARGET_2), ("fake-vol-id", TARGET)])
    def test_a_volume_not_published_there_is_not_found(self, volume_id: str, path: str) -> None:
        node = Node()
        node.stage(stage_request())
        node.publish(publish_request())
        with pytest.raises(NotFound):
            NodeExpandVolume(node.publications, node.locks, node.stagings)(NodeExpandVolumeCommand(volume_id, path))

    def test_a_block_capability_is_invalid(self) -> None:
        node = Node()
        node.stage(stage_request())
        node.publish(publish_request())
        command = NodeExpandVolumeCommand(VOLUME, TARGET, capability=VolumeCapability(AccessMode.SINGLE_NODE_WRITER, block=True))
        with pytest.raises(InvalidArgument):
            NodeExpandVolume(node.publications, node.locks, node.stagings)(command)


class TestNodeCapabilities:
    def test_stats_and_condition_always_and_staging_only_in_stage_mode(self) -> None:
        always = ("GET_VOLUME_STATS", "VOLUME_CONDITION", "SINGLE_NODE_MULTI_WRITER", "EXPAND_VOLUME")
        assert node_capabilities(False) == always
        assert node_capabilities(True) == (*always, "STAGE_UNSTAGE_VOLUME")
