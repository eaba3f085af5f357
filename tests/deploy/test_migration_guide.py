"""docs/migration.md, run where it can be without a cluster: its jq programs on PVs and PVCs as the Kubernetes API
returns them (tests/deploy/migration), what they make validated strictly and fed through the driver's use cases,
and every StorageClass it shows parsed and provisioned by the driver's own code. Its kubectl steps need a cluster:
the cluster e2e runs deploy/examples/csi-driver-nfs, the PV the side-by-side steps make."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from domain.locks import VolumeLocks
from domain.model import AccessMode, CapacityRange, CsiDriverNfsVolumeId, ShareRef, VolumeCapability
from domain.parameters import CsiDriverNfsVolumes, ProvisionDefaults
from domain.usecases.controller import CreateVolume, CreateVolumeCommand, DeleteVolume, DeleteVolumeCommand
from domain.usecases.node import NodePublishVolume, NodePublishVolumeCommand, NodeUnpublishVolume, NodeUnpublishVolumeCommand
from tests.deploy import manifests as m
from tests.deploy.conftest import Built
from tests.fakes import FakeClock, FakeMounter, FakePublicationStore, FakeShareStorage

GUIDE = m.ROOT / "docs" / "migration.md"
FIXTURES = Path(__file__).parent / "migration"
TARGET = "/var/lib/kubelet/pods/uid/volumes/kubernetes.io~csi/pv/mount"
METADATA = {
    "csi.storage.k8s.io/pvc/name": "data",
    "csi.storage.k8s.io/pvc/namespace": "app",
    "csi.storage.k8s.io/pv/name": "pvc-3f6c2a1e-5d0b-4a57-9c43-6b1f0e8a2d11",
}


def guide_block(name: str) -> str:
    """The fenced block right after ``<!-- tested: name -->`` in the guide."""
    text = GUIDE.read_text()
    marker = text.index(f"<!-- tested: {name} -->")
    match = re.compile(r"```(\w+)\n(.*?)\n\s*```", re.S).search(text, marker)
    assert match is not None, f"no code block after the marker {name!r}"
    return "\n".join(line.strip() if match.group(1) == "sh" else line for line in match.group(2).splitlines())


def jq_program(name: str) -> str:
    block = guide_block(name)
    match = re.fullmatch(r"jq '(.*)' \"\$PV\.pvc?\.json\" \| kubectl create -f -", block, re.S)
    assert match is not None, f"the {name} block is not one jq program piped to kubectl create:\n{block}"
    return match.group(1)


def run_jq(tools: m.Tools, name: str, fixture: str) -> dict[str, Any]:
    result = m.run([str(tools.jq), jq_program(name), str(FIXTURES / fixture)])
    assert result.returncode == 0, result.stderr
    made: dict[str, Any] = json.loads(result.stdout)
    return made


def strictly_valid(tools: m.Tools, tmp_path: Path, *objs: dict[str, Any]) -> list[str]:
    path = tmp_path / "made.yaml"
    path.write_text(yaml.safe_dump_all(objs))
    return m.kubernetes_validate(tools.kubernetes_validate, path)


def driver_name(built: dict[str, Built]) -> str:
    (driver,) = m.of_kind(built["base"].objs, "CSIDriver")
    name: str = driver["metadata"]["name"]
    return name


def publish_and_unpublish(pv: dict[str, Any]) -> str:
    """What this driver's node plugin mounts for the PV, as kubelet calls it (the PV's mountOptions as flags)."""
    mounter, store, locks = FakeMounter(), FakePublicationStore(), VolumeLocks()
    csi = pv["spec"]["csi"]
    capability = VolumeCapability(AccessMode.MULTI_NODE_MULTI_WRITER, mount_flags=tuple(pv["spec"].get("mountOptions", ())))
    NodePublishVolume(mounter, store, locks)(
        NodePublishVolumeCommand(csi["volumeHandle"], TARGET, capability, csi.get("readOnly", False), csi["volumeAttributes"])
    )
    source, _ = mounter.mounts[TARGET]
    NodeUnpublishVolume(mounter, store, locks)(NodeUnpublishVolumeCommand(csi["volumeHandle"], TARGET))
    assert mounter.mounts == {} and mounter.targets == set()
    return source


class TestSideBySide:
    def test_the_pv_is_csi_driver_nfss_under_this_drivers_name_retained_and_bound_to_its_claim(
        self, tools: m.Tools, built: dict[str, Built], tmp_path: Path
    ) -> None:
        theirs = json.loads((FIXTURES / "cdn-pv.json").read_text())
        pv = run_jq(tools, "cdn-pv", "cdn-pv.json")
        pvc = run_jq(tools, "pvc", "cdn-pvc.json")
        assert strictly_valid(tools, tmp_path, pv, pvc) == []
        assert pv["spec"]["csi"]["driver"] == driver_name(built)
        assert pv["spec"]["csi"]["volumeHandle"] == theirs["spec"]["csi"]["volumeHandle"]
        assert pv["spec"]["csi"]["volumeAttributes"] == theirs["spec"]["csi"]["volumeAttributes"]
        assert pv["spec"]["persistentVolumeReclaimPolicy"] == "Retain"
        assert pv["spec"]["claimRef"] == {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "namespace": "app", "name": "data"}
        assert "status" not in pv and set(pv["metadata"]) == {"name", "labels"}  # no uid, no provisioned-by
        assert pvc["spec"]["volumeName"] == pv["metadata"]["name"]
        assert pvc["spec"]["storageClassName"] == pv["spec"]["storageClassName"]
        assert "status" not in pvc and set(pvc["metadata"]) == {"name", "namespace", "labels"}

    def test_this_driver_mounts_what_csi_driver_nfs_mounted(self, tools: m.Tools) -> None:
        pv = run_jq(tools, "cdn-pv", "cdn-pv.json")
        assert publish_and_unpublish(pv) == "10.0.0.4:/exports/app/data"

    def test_deleting_it_later_follows_its_handle_only_with_the_opt_in(self, tools: m.Tools) -> None:
        handle = run_jq(tools, "cdn-pv", "cdn-pv.json")["spec"]["csi"]["volumeHandle"]
        share = ShareRef("10.0.0.4", "/exports")
        for theirs, left in ((CsiDriverNfsVolumes(), {"app", "app/data"}),
                             (CsiDriverNfsVolumes(manage=True), {"app", "archived-app", "archived-app/data"})):  # fmt: skip
            storage = FakeShareStorage()
            storage.create_volume_dir(share, "app/data", None)
            DeleteVolume(storage, VolumeLocks(), FakeClock(), theirs=theirs)(DeleteVolumeCommand(handle))
            assert {subdir for _, subdir in storage.dirs} == left


class TestFromNfsSubdirExternalProvisioner:
    def test_its_pv_becomes_a_static_csi_pv_of_this_driver(self, tools: m.Tools, built: dict[str, Built], tmp_path: Path) -> None:
        pv = run_jq(tools, "nsep-pv", "nsep-pv.json")
        assert strictly_valid(tools, tmp_path, pv) == []
        assert "nfs" not in pv["spec"] and pv["spec"]["csi"]["driver"] == driver_name(built)
        assert pv["spec"]["persistentVolumeReclaimPolicy"] == "Retain" and pv["spec"]["storageClassName"] == "nfs-client"
        assert pv["spec"]["claimRef"] == {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "namespace": "shop", "name": "db"}

    def test_this_driver_mounts_the_same_export_with_its_mount_options(self, tools: m.Tools) -> None:
        pv = run_jq(tools, "nsep-pv", "nsep-pv.json")
        assert publish_and_unpublish(pv) == "10.0.0.4:/exports/shop-db-pvc-0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d"

    def test_its_handle_never_reads_as_one_any_delete_acts_on(self, tools: m.Tools) -> None:
        handle = run_jq(tools, "nsep-pv", "nsep-pv.json")["spec"]["csi"]["volumeHandle"]
        assert CsiDriverNfsVolumeId.parse(handle) is None
        storage = FakeShareStorage()
        storage.create_volume_dir(ShareRef("10.0.0.4", "/exports"), "shop-db-pvc-0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d", None)
        before = dict(storage.dirs)
        DeleteVolume(storage, VolumeLocks(), FakeClock(), theirs=CsiDriverNfsVolumes(manage=True))(DeleteVolumeCommand(handle))
        assert storage.dirs == before


def storage_class(name: str) -> dict[str, Any]:
    obj: dict[str, Any] = yaml.safe_load(guide_block(f"storageclass {name}"))
    return obj


def provision(storage: FakeShareStorage, sc: dict[str, Any]) -> str:
    rwx = (VolumeCapability(AccessMode.MULTI_NODE_MULTI_WRITER),)
    command = CreateVolumeCommand(METADATA["csi.storage.k8s.io/pv/name"], rwx, CapacityRange(1 << 30), {**sc["parameters"], **METADATA})
    return CreateVolume(storage, VolumeLocks(), ProvisionDefaults())(command).volume_id.subdir


class TestTranslatedStorageClasses:
    @pytest.mark.parametrize("name", ["nsep-default", "nsep-path-pattern"])
    def test_it_validates_and_names_this_driver(self, tools: m.Tools, built: dict[str, Built], tmp_path: Path, name: str) -> None:
        sc = storage_class(name)
        assert strictly_valid(tools, tmp_path, sc) == []
        assert sc["provisioner"] == driver_name(built) and sc["metadata"]["name"] == "nfs-client"

    def test_nseps_default_naming_is_reproduced_and_archived_on_delete(self) -> None:
        storage = FakeShareStorage()
        assert provision(storage, storage_class("nsep-default")) == "app-data-pvc-3f6c2a1e-5d0b-4a57-9c43-6b1f0e8a2d11"
        (record,) = storage.records.values()
        assert record.parameters["onDelete"] == "archive"

    def test_the_path_pattern_class_adopts_the_directory_nsep_made(self) -> None:
        storage, share = FakeShareStorage(), ShareRef("10.0.0.4", "/exports")
        storage.create_volume_dir(share, "app/data", 0o777)
        storage.files[(share, "app/data/kept")] = b"nsep's"
        assert provision(storage, storage_class("nsep-path-pattern")) == "app/data"
        assert storage.records[(share, "app/data")].parameters["onDelete"] == "delete"
        assert storage.files == {(share, "app/data/kept"): b"nsep's"}


def test_every_path_the_guide_names_in_this_repository_exists() -> None:
    named = set(re.findall(r"(?:deploy|tests|domain|docs)/[\w./-]+\w", GUIDE.read_text()))
    assert {"deploy/overlays/csi-driver-nfs-in-place", "deploy/examples/csi-driver-nfs"} <= named
    assert sorted(path for path in named if not (m.ROOT / path).exists()) == []
