"""What a user of the driver checks, through the real Kubernetes: kubectl, the sidecars, kubelet, the node plugin.

The share is the directory nfs-ganesha exports (the controller reaches it over NFS from user space); the node mounts
it with the mount.nfs stand-in, so "on the share" below is that directory, read from the node. Scenarios run in
file order; the node-only one removes the e2e deployment and puts it back.
"""

from __future__ import annotations

import os
import stat
import time
import urllib.parse
from pathlib import Path

import pytest
import yaml

from tests.e2e.cluster.common import ROOT
from tests.e2e.kube import DRIVER, SERVER, SHARE, Kube, export_dir, mounts_under

NAMESPACE = "nfs-csi"


def storage_class(name: str, **parameters: str) -> dict[str, object]:
    return {"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass", "metadata": {"name": name},
            "provisioner": DRIVER, "reclaimPolicy": "Delete", "volumeBindingMode": "Immediate",
            "allowVolumeExpansion": True, "mountOptions": ["nfsvers=4.1", "hard"],
            "parameters": {"server": SERVER, "share": SHARE, "subDir": "${pvc.metadata.namespace}/${pvc.metadata.name}",
                           **parameters}}


def write_and_wait(kube: Kube, pod: str, claim: str, command: str) -> None:
    """A pod that runs command on the volume and then stays up."""
    kube.apply(kube.pod(pod, claim, f"{command} && sleep 3600"))
    kube.running(pod)


class TestLifecycle:
    @pytest.mark.parametrize("on_delete", ["delete", "archive"])
    def test_pvc_to_pv_then_data_then_the_directory_goes_as_on_delete_says(self, kube: Kube, on_delete: str) -> None:
        sc = f"{kube.namespace}-{on_delete}"
        kube.apply(storage_class(sc, onDelete=on_delete))
        try:
            kube.apply(kube.pvc("data", storage_class=sc))
            pvc = kube.bound("data")
            pv = kube.get("pv", pvc["spec"]["volumeName"], namespaced=False)
            assert pv["spec"]["csi"]["driver"] == DRIVER
            assert pv["spec"]["csi"]["volumeHandle"].startswith("nfs1#")
            directory = kube.volume_dir("data")
            assert directory.is_dir(), f"the volume's directory {directory} is not on the share"

            write_and_wait(kube, "writer", "data", "echo hello from a pod > /data/greeting")
            assert kube.exec("writer", "cat", "/data/greeting") == "hello from a pod\n"
            assert (directory / "greeting").read_text() == "hello from a pod\n"

            kube.delete("pod", "writer")
            kube.delete("pvc", "data")
            kube.wait_until(f"PV {pv['metadata']['name']} deleted",
                            lambda: not kube.exists("pv", pv["metadata"]["name"], namespaced=False))
            assert not directory.exists()
            archived = sorted(directory.parent.glob("archived-data-*"))
            if on_delete == "delete":
                assert archived == []
            else:
                assert len(archived) == 1, f"expected one archived-data-* beside {directory}, found {archived}"
                assert (archived[0] / "greeting").read_text() == "hello from a pod\n"
        finally:
            kube.delete("storageclass", sc, namespaced=False)


class TestReadWriteMany:
    def test_two_pods_read_what_the_other_wrote(self, kube: Kube) -> None:
        kube.apply(kube.pvc("shared", modes=("ReadWriteMany",)))
        kube.bound("shared")
        write_and_wait(kube, "one", "shared", "echo from one > /data/one")
        write_and_wait(kube, "two", "shared", "echo from two > /data/two")
        assert kube.exec("two", "cat", "/data/one") == "from one\n"
        assert kube.exec("one", "cat", "/data/two") == "from two\n"
        kube.exec("one", "sh", "-c", "echo later > /data/later")
        assert kube.exec("two", "cat", "/data/later") == "later\n"


class TestSnapshotsAndClones:
    def test_a_restore_holds_the_snapshot_and_a_clone_holds_the_source(self, kube: Kube) -> None:
        kube.apply(kube.pvc("source"))
        kube.bound("source")
        write_and_wait(kube, "writer", "source", "mkdir -p /data/dir && echo v1 > /data/dir/file && ln -s dir/file /data/link")
        kube.apply({"apiVersion": "snapshot.storage.k8s.io/v1", "kind": "VolumeSnapshot", "metadata": {"name": "snap"},
                    "spec": {"volumeSnapshotClassName": "nfs", "source": {"persistentVolumeClaimName": "source"}}})
        snapshot = kube.wait_until("VolumeSnapshot snap readyToUse",
                                   lambda: (s := kube.get("volumesnapshot", "snap")).get("status", {}).get("readyToUse") and s)
        assert snapshot["status"]["boundVolumeSnapshotContentName"]
        kube.exec("writer", "sh", "-c", "echo v2 > /data/dir/file")  # after the snapshot: only the clone sees it

        kube.apply(kube.pvc("restored", dataSource={"apiGroup": "snapshot.storage.k8s.io", "kind": "VolumeSnapshot",
                                                    "name": "snap"}))
        kube.bound("restored")
        write_and_wait(kube, "reader", "restored", "true")
        assert kube.exec("reader", "cat", "/data/dir/file") == "v1\n"
        assert kube.exec("reader", "readlink", "/data/link") == "dir/file\n"

        kube.apply(kube.pvc("clone", dataSource={"kind": "PersistentVolumeClaim", "name": "source"}))
        kube.bound("clone")
        write_and_wait(kube, "clone-reader", "clone", "true")
        assert kube.exec("clone-reader", "cat", "/data/dir/file") == "v2\n"
        assert (kube.volume_dir("clone") / "dir" / "file").read_text() == "v2\n"

        content = snapshot["status"]["boundVolumeSnapshotContentName"]
        handle = kube.get("volumesnapshotcontent", content, namespaced=False)["status"]["snapshotHandle"]
        leaf = urllib.parse.unquote(handle.split("#")[-1])
        archives = export_dir() / ".nfs-csi" / "snapshots"
        assert (archives / f"{leaf}.json").is_file(), f"no snapshot record {leaf}.json on the share"
        assert (archives / f"{leaf}.tar.gz").is_file(), f"no snapshot archive {leaf}.tar.gz on the share"
        kube.delete("volumesnapshot", "snap")
        kube.wait_until(f"VolumeSnapshotContent {content} deleted",
                        lambda: not kube.exists("volumesnapshotcontent", content, namespaced=False))
        assert sorted(p.name for p in archives.glob(f"{leaf}.*")) == []


class TestOnlineExpansion:
    def test_a_pvc_grows_while_its_pod_uses_it(self, kube: Kube) -> None:
        kube.apply(kube.pvc("grow", size="1Gi"))
        pvc = kube.bound("grow")
        write_and_wait(kube, "user", "grow", "echo before > /data/before")
        kube.kubectl("patch", "pvc", "grow", "--type=merge", "-p", '{"spec":{"resources":{"requests":{"storage":"3Gi"}}}}')
        kube.wait_until("PVC grow reports 3Gi", lambda: kube.get("pvc", "grow")["status"].get("capacity", {}).get("storage") == "3Gi")
        pv = kube.get("pv", pvc["spec"]["volumeName"], namespaced=False)
        assert pv["spec"]["capacity"]["storage"] == "3Gi"
        assert kube.get("pod", "user")["status"]["phase"] == "Running"
        kube.exec("user", "sh", "-c", "echo after > /data/after")
        assert kube.exec("user", "cat", "/data/before", "/data/after") == "before\nafter\n"


class TestVolumeAttributesClass:
    def test_a_class_change_reaches_controller_modify_volume(self, kube: Kube) -> None:
        private, shared = f"{kube.namespace}-private", f"{kube.namespace}-shared"
        for name, mode in ((private, "0700"), (shared, "2770")):
            kube.apply({"apiVersion": "storage.k8s.io/v1", "kind": "VolumeAttributesClass", "metadata": {"name": name},
                        "driverName": DRIVER, "parameters": {"mountPermissions": mode}})
        try:
            kube.apply(kube.pvc("reports", volumeAttributesClassName=private))
            kube.bound("reports")
            directory = kube.volume_dir("reports")
            assert stat.S_IMODE(directory.stat().st_mode) == 0o700  # CreateVolume's mutable parameters
            kube.kubectl("patch", "pvc", "reports", "--type=merge", "-p",
                         f'{{"spec":{{"volumeAttributesClassName":"{shared}"}}}}')
            kube.wait_until("PVC reports on the new class",
                            lambda: kube.get("pvc", "reports")["status"].get("currentVolumeAttributesClassName") == shared)
            assert stat.S_IMODE(directory.stat().st_mode) == 0o2770  # ControllerModifyVolume applied it
            pv = kube.get("pv", kube.get("pvc", "reports")["spec"]["volumeName"], namespaced=False)
            assert pv["spec"].get("volumeAttributesClassName") == shared
        finally:
            kube.delete("pvc", "reports")
            for name in (private, shared):
                kube.delete("volumeattributesclass", name, namespaced=False)


class TestStaticVolume:
    def test_the_static_example_mounts_an_existing_directory_and_is_never_deleted(self, kube: Kube, tmp_path: Path) -> None:
        # As the README says: edit server, share and subDir of deploy/examples/static, then kubectl apply -k.
        existing = export_dir() / "team-a" / "reports"
        existing.mkdir(parents=True, exist_ok=True)
        (existing / "q3.txt").write_text("made by hand\n")
        overlay = tmp_path / "static"
        overlay.mkdir()
        (overlay / "kustomization.yaml").write_text(yaml.safe_dump({
            "apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization",
            "resources": [os.path.relpath(ROOT / "deploy" / "examples" / "static", overlay)],
            "patches": [{"target": {"kind": "PersistentVolume", "name": "team-a-reports"}, "patch": yaml.safe_dump([
                {"op": "replace", "path": "/spec/csi/volumeAttributes/server", "value": SERVER},
                {"op": "replace", "path": "/spec/csi/volumeAttributes/share", "value": SHARE},
            ])}],
        }))
        team = Kube("team-a")
        kube.kubectl("create", "namespace", "team-a", namespaced=False)
        try:
            kube.kubectl("apply", "-k", str(overlay), namespaced=False)
            team.bound("team-a-reports")
            write_and_wait(team, "reader", "team-a-reports", "echo from a pod > /data/from-pod")
            assert team.exec("reader", "cat", "/data/q3.txt") == "made by hand\n"
            assert (existing / "from-pod").read_text() == "from a pod\n"
        finally:
            kube.kubectl("delete", "namespace", "team-a", "--wait=true", "--timeout=240s", namespaced=False, timeout=270)
            kube.delete("pv", "team-a-reports", namespaced=False)
        assert (existing / "q3.txt").read_text() == "made by hand\n"  # Retain: the driver never deletes it


class TestNodePluginRestart:
    def test_a_mounted_volume_survives_the_node_plugin_and_unmounts_cleanly_later(self, kube: Kube) -> None:
        kube.apply(kube.pvc("kept"))
        pvc = kube.bound("kept")
        write_and_wait(kube, "user", "kept", "echo before > /data/before")
        pod = kube.get("pod", "user")
        target = (f"/var/lib/kubelet/pods/{pod['metadata']['uid']}/volumes/kubernetes.io~csi/"
                  f"{pvc['spec']['volumeName']}/mount")
        assert mounts_under(target) == [target], "the volume is not mounted where kubelet put the pod's volume"

        plugins = Kube(NAMESPACE)
        (old,) = [p["metadata"]["name"] for p in plugins.items("pod", "-l", "app.kubernetes.io/component=node")]
        plugins.kubectl("delete", "pod", old, "--wait=true", "--timeout=120s")
        plugins.kubectl("rollout", "status", "daemonset/nfs-csi-node", "--timeout=180s", timeout=200)
        (new,) = [p["metadata"]["name"] for p in plugins.items("pod", "-l", "app.kubernetes.io/component=node")]
        assert new != old

        assert mounts_under(target) == [target], "the pod's mount went away with the node plugin"
        assert kube.exec("user", "cat", "/data/before") == "before\n"
        kube.exec("user", "sh", "-c", "echo after > /data/after")
        assert (kube.volume_dir("kept") / "after").read_text() == "after\n"

        kube.delete("pod", "user")  # NodeUnpublishVolume, served by the new plugin pod
        assert mounts_under(target) == []
        assert not Path(target).exists()


class TestControllerKilledDuringBurst:
    COUNT = 20

    def test_every_claim_binds_once_with_no_duplicate_volume(self, kube: Kube) -> None:
        controller = Kube(NAMESPACE)
        kube.apply(*[kube.pvc(f"burst-{i:02d}") for i in range(self.COUNT)])
        time.sleep(1)  # the provisioner is at work on the burst
        (pod,) = [p["metadata"]["name"] for p in controller.items("pod", "-l", "app.kubernetes.io/component=controller")]
        controller.kubectl("delete", "pod", pod, "--grace-period=0", "--force", "--wait=false")
        claims = kube.wait_until(f"all {self.COUNT} PVCs Bound", lambda: (
            items := kube.items("pvc")) and all(c["status"].get("phase") == "Bound" for c in items) and items, timeout=600)
        assert len(claims) == self.COUNT
        volumes = [c["spec"]["volumeName"] for c in claims]
        assert len(set(volumes)) == self.COUNT
        ours = [pv for pv in kube.items("pv", namespaced=False)
                if (pv["spec"].get("claimRef") or {}).get("namespace") == kube.namespace]
        assert sorted(pv["metadata"]["name"] for pv in ours) == sorted(volumes), "a PV without its claim, or a second one"
        handles = [pv["spec"]["csi"]["volumeHandle"] for pv in ours]
        assert len(set(handles)) == self.COUNT
        on_share = sorted(p.name for p in (export_dir() / kube.namespace).iterdir() if not p.name.startswith("."))
        assert on_share == sorted(f"burst-{i:02d}" for i in range(self.COUNT)), "a directory too many or missing"
        Kube(NAMESPACE).kubectl("rollout", "status", "deployment/nfs-csi-controller", "--timeout=180s", timeout=200)


class TestCsiDriverNfsVolume:
    """Issue 16: a volume csi-driver-nfs provisioned, its PV recreated as docs/migration.md's side-by-side steps do
    (csi-driver-nfs's handle and volumeAttributes, this driver's name), mounted by a pod through our node plugin."""

    PV = "pvc-3f6c2a1e-5d0b-4a57-9c43-6b1f0e8a2d11"

    def test_a_pod_reads_and_writes_their_volume_and_it_outlives_its_pv(self, kube: Kube, tmp_path: Path) -> None:
        # The directory as csi-driver-nfs's CreateVolume left it: <share>/<pv name>, no record of this driver.
        theirs = export_dir() / self.PV
        theirs.mkdir(mode=0o777, exist_ok=True)
        (theirs / "written-by-csi-driver-nfs").write_text("from csi-driver-nfs\n")
        overlay = tmp_path / "takeover"
        overlay.mkdir()
        (overlay / "kustomization.yaml").write_text(yaml.safe_dump({
            "apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization",
            "resources": [os.path.relpath(ROOT / "deploy" / "examples" / "csi-driver-nfs", overlay)],
            "patches": [{"target": {"kind": "PersistentVolume", "name": self.PV}, "patch": yaml.safe_dump([
                {"op": "replace", "path": "/spec/csi/volumeHandle", "value": f"{SERVER}#{SHARE.strip('/')}#{self.PV}##"},
                {"op": "replace", "path": "/spec/csi/volumeAttributes/server", "value": SERVER},
                {"op": "replace", "path": "/spec/csi/volumeAttributes/share", "value": SHARE},
            ])}],
        }))
        namespace = Kube("csi-driver-nfs-takeover")
        try:
            kube.kubectl("apply", "-k", str(overlay), namespaced=False)
            namespace.bound("data")
            namespace.running("reader")
            assert namespace.exec("reader", "cat", "/data/written-by-csi-driver-nfs") == "from csi-driver-nfs\n"
            assert (theirs / "written-through-this-driver").read_text() == "ok\n"
            pod = namespace.get("pod", "reader")
            target = f"/var/lib/kubelet/pods/{pod['metadata']['uid']}/volumes/kubernetes.io~csi/{self.PV}/mount"
            assert mounts_under(target) == [target], "their volume is not mounted where kubelet put the pod's volume"
            namespace.delete("pod", "reader")  # NodeUnpublishVolume of their handle
            assert mounts_under(target) == []
        finally:
            kube.kubectl("delete", "namespace", "csi-driver-nfs-takeover", "--ignore-not-found", "--wait=true",
                         "--timeout=240s", namespaced=False, timeout=270)
            kube.delete("pv", self.PV, namespaced=False)
        # Retain, and a volume this driver did not make: its data stays.
        assert (theirs / "written-by-csi-driver-nfs").read_text() == "from csi-driver-nfs\n"


class TestNodeOnlyOverlay:
    """Last: it replaces the e2e deployment with the node-only one, then puts the e2e deployment back."""

    def test_node_only_alone_serves_static_volumes_with_no_controller(self, kube: Kube, tmp_path: Path) -> None:
        e2e = str(ROOT / "deploy" / "overlays" / "e2e")
        node_only = str(ROOT / "deploy" / "overlays" / "e2e" / "node-only")
        admin = Kube(NAMESPACE)
        admin.kubectl("delete", "-k", e2e, "--wait=true", "--timeout=240s", namespaced=False, timeout=270)
        try:
            admin.kubectl("apply", "-k", node_only, namespaced=False)
            admin.kubectl("rollout", "status", "daemonset/nfs-csi-node", "--timeout=240s", timeout=260)
            assert admin.items("deployment") == []
            assert not admin.exists("clusterrole", "nfs-csi-provisioner", namespaced=False)
            assert not admin.exists("storageclass", "nfs", namespaced=False)
            assert not admin.exists("volumesnapshotclass", "nfs", namespaced=False)
            assert admin.exists("csidriver", DRIVER, namespaced=False)
            admin.wait_until("the node plugin registered", lambda: DRIVER in admin.kubectl(
                "get", "csinode", "-o", "jsonpath={.items[*].spec.drivers[*].name}", namespaced=False))

            existing = export_dir() / kube.namespace / "static"
            existing.mkdir(parents=True)
            (existing / "file").write_text("static\n")
            kube.apply({"apiVersion": "v1", "kind": "PersistentVolume", "metadata": {"name": f"{kube.namespace}-static"},
                        "spec": {"capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteMany"],
                                 "persistentVolumeReclaimPolicy": "Retain", "storageClassName": "",
                                 "claimRef": {"namespace": kube.namespace, "name": "static"},
                                 "csi": {"driver": DRIVER, "volumeHandle": f"{kube.namespace}-static",
                                         "volumeAttributes": {"server": SERVER, "share": SHARE,
                                                              "subDir": f"{kube.namespace}/static"}}}})
            kube.apply(kube.pvc("static", modes=("ReadWriteMany",), storage_class="", volumeName=f"{kube.namespace}-static"))
            kube.bound("static")
            write_and_wait(kube, "reader", "static", "true")
            assert kube.exec("reader", "cat", "/data/file") == "static\n"
            kube.delete("pod", "reader")
            kube.delete("pvc", "static")
            kube.delete("pv", f"{kube.namespace}-static", namespaced=False)
        finally:
            admin.kubectl("delete", "-k", node_only, "--ignore-not-found", "--wait=true", "--timeout=240s",
                          namespaced=False, timeout=270)
            admin.kubectl("apply", "-k", e2e, namespaced=False)
            admin.kubectl("rollout", "status", "daemonset/nfs-csi-node", "--timeout=240s", timeout=260)
            admin.kubectl("rollout", "status", "deployment/nfs-csi-controller", "--timeout=240s", timeout=260)

