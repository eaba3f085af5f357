"""Volumes described by their context: static PersistentVolumes and inline volumes."""

from __future__ import annotations

import pytest

from domain.errors import InvalidArgument
from domain.static import ContextVolume, describes_volume, is_ephemeral


class TestContextVolume:
    def test_names_server_share_subdir_and_options(self) -> None:
        volume = ContextVolume.from_context(
            {"server": "nfs.example", "share": "/exports", "subDir": "team/data", "mountOptions": "nfsvers=4.1, hard"}
        )
        assert volume is not None
        assert (volume.source, volume.mount_options) == ("nfs.example:/exports/team/data", ("nfsvers=4.1", "hard"))

    def test_without_subdir_the_share_itself_is_the_volume(self) -> None:
        volume = ContextVolume.from_context({"server": "nfs.example", "share": "/exports"})
        assert volume is not None and volume.source == "nfs.example:/exports"

    def test_the_keys_kubernetes_adds_are_ignored(self) -> None:
        volume = ContextVolume.from_context(
            {
                "server": "nfs.example",
                "share": "/exports",
                "csi.storage.k8s.io/pvc/name": "data",
                "storage.kubernetes.io/csiProvisionerIdentity": "1767225600000-9216-nfs.csi.k8s.io",
            }
        )
        assert volume is not None and volume.source == "nfs.example:/exports"

    def test_a_context_naming_no_share_describes_nothing(self) -> None:
        assert ContextVolume.from_context({"storage.kubernetes.io/csiProvisionerIdentity": "x"}) is None
        assert ContextVolume.from_context({}) is None

    @pytest.mark.parametrize(
        "context",
        [
            {"server": "nfs.example", "share": "/exports", "subDir": "../etc"},
            {"server": "nfs.example", "share": "/exports", "subDir": "/abs"},
            {"server": "a,b", "share": "/exports"},
            {"server": "-oexec", "share": "/exports"},
            {"server": "nfs.example", "share": "/exports/../etc"},
            {"server": "nfs.example", "share": "/exports", "mountOptions": "bind"},
            {"server": "nfs.example", "share": "/exports", "mountOptions": "hard,x-mount.mkdir"},
            {"server": "nfs.example"},
            {"share": "/exports"},
            {"server": "nfs.example", "share": "/exports", "readOnly": "true"},
        ],
    )
    def test_hostile_or_incomplete_contexts_are_invalid_argument(self, context: dict[str, str]) -> None:
        with pytest.raises(InvalidArgument):
            ContextVolume.from_context(context)


def test_ephemeral_is_read_from_the_kubernetes_key() -> None:
    assert is_ephemeral({"csi.storage.k8s.io/ephemeral": "true"})
    assert not is_ephemeral({"csi.storage.k8s.io/ephemeral": "false"}) and not is_ephemeral({})


@pytest.mark.parametrize("value", ["TRUE", "True", " true", "true\n", "False", "1", ""])
def test_only_kubelets_exact_words_are_read_anything_else_is_refused(value: str) -> None:
    with pytest.raises(InvalidArgument, match="must be"):
        is_ephemeral({"csi.storage.k8s.io/ephemeral": value})


def test_an_id_of_ours_or_a_context_naming_a_share_describes_a_volume() -> None:
    assert describes_volume("nfs1#h#/e#v#delete", {})
    assert describes_volume("any-handle-the-admin-chose", {"server": "h", "share": "/e"})
    assert not describes_volume("fake-vol-id-1", {})
