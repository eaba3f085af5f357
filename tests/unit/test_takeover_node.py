"""Taking over from csi-driver-nfs on a node, and a node that lost its state: its handles, contexts and mounts."""

from __future__ import annotations

import pytest

from domain.errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound
from domain.locks import VolumeLocks
from domain.model import AccessMode, OnDelete, Publication, ShareRef, VolumeCapability, VolumeId
from domain.usecases.node import NodePublishVolume, NodePublishVolumeCommand, NodeUnpublishVolume, NodeUnpublishVolumeCommand
from domain.usecases.stage import NodeUnstageVolume, NodeUnstageVolumeCommand
from domain.usecases.stats import NodeGetVolumeStats, NodeGetVolumeStatsCommand
from tests.fakes import FakeMounter, FakePublicationStore

TARGET = "/var/lib/kubelet/pods/uid/volumes/kubernetes.io~csi/pvc-1f2e/mount"
STAGING = "/var/lib/kubelet/plugins/kubernetes.io/csi/nfs.csi.k8s.io/abc/globalmount"
RWX = VolumeCapability(AccessMode.MULTI_NODE_MULTI_WRITER, mount_flags=("nfsvers=4.1",))
# A dynamic volume as csi-driver-nfs v4.13 provisions it: its handle, and the PV's volumeAttributes (the
# StorageClass's parameters, subdir resolved, --extra-create-metadata keys, and the provisioner's identity).
HANDLE = "10.0.0.4#exports#pvc-1f2e##"
CONTEXT = {
    "server": "10.0.0.4",
    "share": "/exports",
    "subdir": "pvc-1f2e",
    "csi.storage.k8s.io/pv/name": "pvc-1f2e",
    "csi.storage.k8s.io/pvc/name": "data",
    "csi.storage.k8s.io/pvc/namespace": "app",
    "storage.kubernetes.io/csiProvisionerIdentity": "1767225600000-9216-nfs.csi.k8s.io",
}
SOURCE = "10.0.0.4:/exports/pvc-1f2e"
OURS = str(VolumeId(ShareRef("10.0.0.4", "/exports"), "pvc-1f2e", OnDelete.DELETE))


class StackingMounter(FakeMounter):
    """A fake that can show more than one mount stacked at a path, bottom first."""

    def __init__(self) -> None:
        super().__init__()
        self.below: dict[str, list[str]] = {}

    def mounted_sources(self, path: str) -> tuple[str, ...]:
        return (*self.below.get(path, ()), *super().mounted_sources(path))


class Node:
    def __init__(self) -> None:
        self.mounter = StackingMounter()
        self.publications = FakePublicationStore()
        self.stagings = FakePublicationStore()
        locks = VolumeLocks()
        self.publish = NodePublishVolume(self.mounter, self.publications, locks)
        self.unpublish = NodeUnpublishVolume(self.mounter, self.publications, locks, stagings=self.stagings)
        self.unstage = NodeUnstageVolume(self.mounter, self.stagings, locks, self.publications)
        self.stats = NodeGetVolumeStats(self.mounter, self.publications)

    def mounted_elsewhere(self, path: str, source: str) -> None:
        """A mount made outside this driver (by csi-driver-nfs's node plugin, or before the state was lost)."""
        self.mounter.targets.add(path)
        self.mounter.mounts[path] = (source, ())


@pytest.fixture
def node() -> Node:
    return Node()


def publish(node: Node, volume_id: str = HANDLE, context: dict[str, str] | None = None, **changes: object) -> None:
    fields: dict[str, object] = {
        "volume_id": volume_id, "target_path": TARGET, "capability": RWX, "context": CONTEXT if context is None else context,
    }  # fmt: skip
    node.publish(NodePublishVolumeCommand(**{**fields, **changes}))  # type: ignore[arg-type]


class TestPublishTheirVolumes:
    def test_a_dynamic_volume_mounts_what_its_context_names_ignoring_kubernetes_keys(self, node: Node) -> None:
        publish(node)
        assert node.mounter.mounts[TARGET] == (SOURCE, ("nfsvers=4.1",))

    def test_every_key_their_storage_class_passes_is_accepted_in_any_case(self, node: Node) -> None:
        context = {"Server": "10.0.0.4", "SHARE": "/exports/", "subDir": "pvc-1f2e", "onDelete": "archive", "mountPermissions": "0777"}
        publish(node, context=context)
        assert node.mounter.mounts[TARGET][0] == SOURCE

    def test_their_static_volume_mounts_from_its_context_and_mount_options(self, node: Node) -> None:
        context = {"server": "nfs-server.default.svc.cluster.local", "share": "/", "mountOptions": "nfsvers=4.1"}
        publish(node, "nfs-server.default.svc.cluster.local/share##", context)  # the handle of their example PV
        assert node.mounter.mounts[TARGET] == ("nfs-server.default.svc.cluster.local:/", ("nfsvers=4.1",))

    def test_an_ipv6_server_without_brackets_gets_them_as_csi_driver_nfs_adds_them(self, node: Node) -> None:
        publish(node, "fd00::4#exports#pvc-1f2e##", {"server": "fd00::4", "share": "/exports", "subdir": "pvc-1f2e"})
        assert node.mounter.mounts[TARGET][0] == "[fd00::4]:/exports/pvc-1f2e"

    @pytest.mark.parametrize("handle", [HANDLE, "10.0.0.4#exports#pvc-1f2e", "10.0.0.4/exports/pvc-1f2e"])
    def test_with_no_context_naming_a_share_the_handle_says_what_to_mount(self, node: Node, handle: str) -> None:
        publish(node, handle, {"storage.kubernetes.io/csiProvisionerIdentity": "x"})
        assert node.mounter.mounts[TARGET][0] == SOURCE

    @pytest.mark.parametrize("handle", ["10.0.0.4#exports#..##", "10.0.0.4#exports#../../etc##", "10.0.0.4#exports###"])
    def test_a_handle_that_would_leave_its_share_is_no_volume(self, node: Node, handle: str) -> None:
        with pytest.raises(NotFound):
            publish(node, handle, {})
        assert node.mounter.mounts == {} and node.publications.publications == {}

    @pytest.mark.parametrize(
        "context",
        [
            {**CONTEXT, "subdir": "../etc"},
            {**CONTEXT, "subdir": "/etc"},
            {**CONTEXT, "server": "10.0.0.4,sec=none"},
            {**CONTEXT, "mountOptions": "nfsvers=4.1,x-mount.mkdir"},
        ],
    )
    def test_a_hostile_context_is_invalid_argument_and_mounts_nothing(self, node: Node, context: dict[str, str]) -> None:
        with pytest.raises(InvalidArgument):
            publish(node, context=context)
        assert node.mounter.mounts == {} and node.mounter.targets == set()

    def test_their_mount_already_at_the_target_is_taken_over_not_mounted_again(self, node: Node) -> None:
        node.mounted_elsewhere(TARGET, SOURCE + "/")
        publish(node)
        assert node.mounter.mounts[TARGET] == (SOURCE + "/", ())  # left as it was
        assert node.publications.publications[TARGET].source == SOURCE  # and recorded from now on
        node.unpublish(NodeUnpublishVolumeCommand(HANDLE, TARGET))
        assert node.mounter.mounts == {} and node.publications.publications == {}

    def test_another_mount_at_the_target_is_still_already_exists(self, node: Node) -> None:
        node.mounted_elsewhere(TARGET, "10.0.0.4:/exports/pvc-1f2e0")
        with pytest.raises(AlreadyExists):
            publish(node)
        assert node.publications.publications == {}


class TestUnpublishAfterASwap:
    @pytest.mark.parametrize(
        "handle,mounted",
        [
            (HANDLE, SOURCE),
            ("10.0.0.4#exports#pvc-1f2e", SOURCE),
            ("10.0.0.4/exports/pvc-1f2e", SOURCE),
            (HANDLE, "10.0.0.4:/exports/pvc-1f2e/"),
            (HANDLE, "10.0.0.4://exports//pvc-1f2e"),
            ("fd00::4#exports#pvc-1f2e##", "[fd00:0::4]:/exports/pvc-1f2e"),
            ("NFS.example#exports/#pvc-1f2e##retain", "nfs.example:/exports/pvc-1f2e"),
            (OURS, SOURCE),  # one of ours, on a node whose state directory was lost
        ],
    )
    def test_a_mount_of_exactly_what_the_handle_names_is_unmounted_and_removed(
        self, node: Node, handle: str, mounted: str
    ) -> None:
        node.mounted_elsewhere(TARGET, mounted)
        node.unpublish(NodeUnpublishVolumeCommand(handle, TARGET))
        assert node.mounter.mounts == {} and node.mounter.targets == set()
        node.unpublish(NodeUnpublishVolumeCommand(handle, TARGET))  # kubelet's retry after a lost reply

    @pytest.mark.parametrize(
        "handle,mounted",
        [
            (HANDLE, "10.0.0.4:/exports/pvc-1f2e0"),  # the handle's directory is a prefix of this one
            (HANDLE, "10.0.0.4:/exports/pvc-1f2e/inner"),
            (HANDLE, "10.0.0.4:/exports"),
            (HANDLE, "10.0.0.5:/exports/pvc-1f2e"),
            (HANDLE, "nfs.example:/exports/pvc-1f2e"),  # a name for the same address is never assumed
            (HANDLE, "/dev/sda1"),  # a bind mount of a local directory
            (HANDLE, "tmpfs"),
            ("10.0.0.4#exports#..##", "10.0.0.4:/"),
            ("any-static-handle", SOURCE),  # a handle naming no export never vouches for a mount
        ],
    )
    def test_a_mount_of_anything_else_is_failed_precondition_and_left_alone(
        self, node: Node, handle: str, mounted: str
    ) -> None:
        node.mounted_elsewhere(TARGET, mounted)
        with pytest.raises(FailedPrecondition, match="refusing to unmount"):
            node.unpublish(NodeUnpublishVolumeCommand(handle, TARGET))
        assert node.mounter.mounts == {TARGET: (mounted, ())} and TARGET in node.mounter.targets

    def test_a_matching_mount_over_another_is_refused_whole(self, node: Node) -> None:
        node.mounted_elsewhere(TARGET, SOURCE)
        node.mounter.below[TARGET] = ["10.0.0.4:/exports/secret"]
        with pytest.raises(FailedPrecondition):
            node.unpublish(NodeUnpublishVolumeCommand(HANDLE, TARGET))
        assert TARGET in node.mounter.mounts

    def test_their_target_left_empty_is_removed_and_ok(self, node: Node) -> None:
        node.mounter.targets.add(TARGET)
        node.unpublish(NodeUnpublishVolumeCommand(HANDLE, TARGET))
        assert node.mounter.targets == set()

    def test_a_target_this_driver_published_for_another_volume_is_still_refused(self, node: Node) -> None:
        publish(node, OURS, {})
        with pytest.raises(FailedPrecondition, match="holds another volume"):
            node.unpublish(NodeUnpublishVolumeCommand(HANDLE, TARGET))
        assert TARGET in node.mounter.mounts


class TestStatsAfterASwap:
    def test_their_mount_of_what_the_handle_names_reports_usage(self, node: Node) -> None:
        node.mounted_elsewhere(TARGET, SOURCE)
        stats = node.stats(NodeGetVolumeStatsCommand(HANDLE, TARGET))
        assert stats.usage == node.mounter.usage and not stats.abnormal

    def test_a_volume_published_through_this_driver_reports_usage(self, node: Node) -> None:
        publish(node)
        assert node.stats(NodeGetVolumeStatsCommand(HANDLE, TARGET)).usage == node.mounter.usage

    @pytest.mark.parametrize("mounted", ["10.0.0.4:/exports/pvc-1f2e0", "/dev/sda1"])
    def test_a_mount_of_anything_else_is_not_found(self, node: Node, mounted: str) -> None:
        node.mounted_elsewhere(TARGET, mounted)
        with pytest.raises(NotFound):
            node.stats(NodeGetVolumeStatsCommand(HANDLE, TARGET))

    def test_no_mount_is_not_found(self, node: Node) -> None:
        with pytest.raises(NotFound):
            node.stats(NodeGetVolumeStatsCommand(HANDLE, TARGET))


class TestEachKindOfRecordIsKept:
    def test_unpublish_never_unmounts_a_recorded_staging_mount_of_the_same_volume(self, node: Node) -> None:
        node.mounted_elsewhere(STAGING, SOURCE)
        node.stagings.put(Publication(OURS, STAGING, SOURCE, ()))
        with pytest.raises(FailedPrecondition, match="NodeUnstageVolume unmounts it"):
            node.unpublish(NodeUnpublishVolumeCommand(OURS, STAGING))
        assert STAGING in node.mounter.mounts

    def test_unstage_never_unmounts_a_recorded_publication_of_the_same_volume(self, node: Node) -> None:
        publish(node, OURS, {})
        with pytest.raises(FailedPrecondition, match="NodeUnpublishVolume unmounts it"):
            node.unstage(NodeUnstageVolumeCommand(OURS, TARGET))
        assert TARGET in node.mounter.mounts


class TestUnstageAfterLostState:
    def test_a_staging_mount_of_exactly_the_volume_is_unmounted(self, node: Node) -> None:
        node.mounted_elsewhere(STAGING, SOURCE)
        node.unstage(NodeUnstageVolumeCommand(OURS, STAGING))
        assert node.mounter.mounts == {}

    def test_a_staging_mount_of_anything_else_is_refused(self, node: Node) -> None:
        node.mounted_elsewhere(STAGING, "10.0.0.4:/exports/other")
        with pytest.raises(FailedPrecondition):
            node.unstage(NodeUnstageVolumeCommand(OURS, STAGING))
        assert STAGING in node.mounter.mounts

    def test_a_bind_of_a_lost_staging_mount_is_unpublished_as_the_kernel_shows_its_source(self, node: Node) -> None:
        node.mounted_elsewhere(STAGING, SOURCE)
        node.mounter.targets.add(TARGET)
        node.mounter.bind_mount(STAGING, TARGET, readonly=False)
        node.unpublish(NodeUnpublishVolumeCommand(OURS, TARGET))
        assert list(node.mounter.mounts) == [STAGING]
