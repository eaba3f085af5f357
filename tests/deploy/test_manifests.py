"""Every kustomization builds, validates against Kubernetes and CRD schemas, and passes the deployment's policies."""

from __future__ import annotations

import re
import tomllib

import pytest

from tests.deploy import manifests as m
from tests.deploy.conftest import Built
from tests.deploy.manifests import ROOT, Tools

TARGETS = ["base", *m.overlays()]
NODE_ONLY = "node-only"
PROVISIONING = [t for t in TARGETS if t != NODE_ONLY]  # every build that runs a controller


def project_version() -> str:
    return str(tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"])


def test_there_are_dev_and_prod_overlays() -> None:
    assert {"dev", "prod"} <= set(m.overlays())


@pytest.mark.parametrize("target", TARGETS)
class TestSchemas:
    def test_every_object_validates_strictly_against_kubernetes(
        self, target: str, built: dict[str, Built], tools: Tools
    ) -> None:
        assert m.kubernetes_validate(tools.kubernetes_validate, built[target].path) == []

    def test_custom_resources_validate_against_their_upstream_crds(
        self, target: str, built: dict[str, Built], tools: Tools
    ) -> None:
        assert m.validate_custom_resources(built[target].objs, tools.crds) == []


@pytest.mark.parametrize("target", TARGETS)
class TestPolicies:
    def test_driver_name_is_the_same_in_csidriver_storageclasses_snapshotclass_and_flags(
        self, target: str, built: dict[str, Built]
    ) -> None:
        assert m.check_driver_name(built[target].objs) == []

    def test_sidecars_registrar_and_driver_agree_on_socket_paths(self, target: str, built: dict[str, Built]) -> None:
        assert m.check_sockets(built[target].objs) == []

    def test_node_plugin_has_the_mounts_propagation_and_privilege_it_needs(
        self, target: str, built: dict[str, Built]
    ) -> None:
        assert m.check_node_plugin(built[target].objs) == []

    def test_every_image_is_pinned(self, target: str, built: dict[str, Built]) -> None:
        assert m.check_images_pinned(built[target].objs) == []

    def test_driver_image_is_tagged_with_the_project_version(self, target: str, built: dict[str, Built]) -> None:
        tags = {m.split_image(d["image"])[1] for _, d in m.driver_workloads(built[target].objs)}
        assert tags == {project_version()}

    def test_metrics_port_is_the_same_in_flag_container_service_and_monitors(
        self, target: str, built: dict[str, Built]
    ) -> None:
        assert m.check_metrics(built[target].objs) == []

    def test_liveness_probes_ask_the_livenessprobe_sidecar_where_it_listens(
        self, target: str, built: dict[str, Built]
    ) -> None:
        assert m.check_liveness(built[target].objs) == []

    def test_rbac_is_complete_and_least_privilege(self, target: str, built: dict[str, Built]) -> None:
        assert m.check_rbac(built[target].objs) == []

    def test_controller_sidecars_elect_a_leader(self, target: str, built: dict[str, Built]) -> None:
        assert m.check_leader_election(built[target].objs) == []

    def test_csidriver_is_attachless_file_fsgroup_persistent(self, target: str, built: dict[str, Built]) -> None:
        (driver,) = m.of_kind(built[target].objs, "CSIDriver")
        assert driver["spec"]["attachRequired"] is False
        assert driver["spec"]["fsGroupPolicy"] == "File"
        assert driver["spec"]["volumeLifecycleModes"] == ["Persistent"]

    def test_csidriver_says_what_the_driver_does(self, target: str, built: dict[str, Built]) -> None:
        assert m.check_csidriver(built[target].objs) == []

    def test_the_driver_accepts_its_arguments(self, target: str, built: dict[str, Built]) -> None:
        assert m.check_driver_args(built[target].objs) == []


@pytest.mark.parametrize("target", PROVISIONING)
class TestProvisioning:
    def test_provisioner_passes_pvc_metadata_for_subdir_templates(self, target: str, built: dict[str, Built]) -> None:
        (controller,) = m.of_kind(built[target].objs, "Deployment")
        provisioner = m.container(controller, "csi-provisioner")
        assert provisioner is not None and m.flags(provisioner).get("extra-create-metadata") == "true"

    def test_ships_the_example_volumesnapshotclass(self, target: str, built: dict[str, Built]) -> None:
        assert m.of_kind(built[target].objs, "VolumeSnapshotClass"), "the example VolumeSnapshotClass is missing"

    def test_every_controller_capability_is_served_by_a_sidecar(self, target: str, built: dict[str, Built]) -> None:
        assert m.check_capabilities(built[target].objs) == []

    def test_volume_attributes_classes_are_on_and_readable_by_provisioner_and_resizer(
        self, target: str, built: dict[str, Built]
    ) -> None:
        (controller,) = m.of_kind(built[target].objs, "Deployment")
        for name in m.VAC_SIDECARS:
            sidecar = m.container(controller, name)
            assert sidecar is not None
            assert m.feature_gates(sidecar).get("VolumeAttributesClass", True), name
            assert set(m.VOLUME_ATTRIBUTES_CLASSES) <= set(m.needed_permissions(sidecar)), name

    def test_every_storageclass_allows_expansion(self, target: str, built: dict[str, Built]) -> None:
        classes = m.of_kind(built[target].objs, "StorageClass")
        assert classes and all(sc.get("allowVolumeExpansion") is True for sc in classes)

    def test_the_controller_lists_every_share_a_class_names(self, target: str, built: dict[str, Built]) -> None:
        assert m.check_shares(built[target].objs) == []

    def test_sidecars_wait_longer_than_the_driver_may_work_on_a_call(
        self, target: str, built: dict[str, Built]
    ) -> None:
        assert m.check_timeouts(built[target].objs) == []


def test_snapshot_crd_comes_from_the_release_of_the_csi_snapshotter_image(
    built: dict[str, Built], tools: Tools
) -> None:
    (controller,) = m.of_kind(built["base"].objs, "Deployment")
    snapshotter = m.container(controller, "csi-snapshotter")
    assert snapshotter is not None
    image_version = m.split_image(snapshotter["image"])[1]
    sources = (tools.crds / "sources.txt").read_text()
    crd_version = re.search(r"external-snapshotter/client/v\d+@(\S+)", sources)
    assert crd_version and crd_version.group(1) == image_version, sources


class TestDev:
    def test_one_controller_and_debug_logs(self, built: dict[str, Built]) -> None:
        objs = built["dev"].objs
        (controller,) = m.of_kind(objs, "Deployment")
        assert controller["spec"]["replicas"] == 1
        for _, driver in m.driver_workloads(objs):
            assert m.flags(driver)["log-level"] == "debug"

    def test_has_a_storageclass_for_an_in_cluster_nfs_server(self, built: dict[str, Built]) -> None:
        servers = [sc["parameters"]["server"] for sc in m.of_kind(built["dev"].objs, "StorageClass")]
        assert any(s.endswith(".svc.cluster.local") for s in servers), servers

    def test_the_controller_lists_both_storageclasses_shares(self, built: dict[str, Built]) -> None:
        (controller,) = m.of_kind(built["dev"].objs, "Deployment")
        driver = m.container(controller, "nfs-csi-driver")
        assert driver is not None
        shares = {share.source() for share in m.driver_settings(driver).shares}
        assert shares == {"nfs-server.example.com:/exports", "nfs-server.nfs-server.svc.cluster.local:/exports"}


class TestProd:
    def test_two_controllers_with_a_disruption_budget(self, built: dict[str, Built]) -> None:
        objs = built["prod"].objs
        (controller,) = m.of_kind(objs, "Deployment")
        assert controller["spec"]["replicas"] == 2
        (pdb,) = m.of_kind(objs, "PodDisruptionBudget")
        assert m.selects(pdb["spec"]["selector"]["matchLabels"], controller["spec"]["template"]["metadata"]["labels"])
        assert pdb["spec"]["minAvailable"] == 1

    def test_every_container_has_requests_and_a_memory_limit(self, built: dict[str, Built]) -> None:
        missing = [
            f"{m.ident(w)}/{c['name']}"
            for w in m.workloads(built["prod"].objs)
            for c in m.containers(w)
            if not {"cpu", "memory"} <= set(c.get("resources", {}).get("requests", {}))
            or "memory" not in c.get("resources", {}).get("limits", {})
        ]
        assert missing == []

    def test_workloads_use_priority_classes_of_the_build(self, built: dict[str, Built]) -> None:
        objs = built["prod"].objs
        classes = {p["metadata"]["name"] for p in m.of_kind(objs, "PriorityClass")}
        used = {m.pod_spec(w).get("priorityClassName") for w in m.workloads(objs)}
        assert used <= classes and None not in used

    def test_monitoring_scrapes_the_driver_and_alerts_on_errors_mount_timeouts_and_slow_creates(
        self, built: dict[str, Built]
    ) -> None:
        objs = built["prod"].objs
        assert m.of_kind(objs, "ServiceMonitor", "PodMonitor")
        alerts = {r["alert"] for g in m.rules_file(objs)["groups"] for r in g["rules"] if "alert" in r}
        assert {"NfsCsiHighErrorRatio", "NfsCsiMountTimeouts", "NfsCsiSlowCreateVolume"} <= alerts
        assert m.check_alert_jobs(objs) == []


class TestProdUserspace:
    def test_the_controller_provisions_over_userspace_nfs_without_any_privilege(self, built: dict[str, Built]) -> None:
        objs = built["prod-userspace"].objs
        (controller,) = m.of_kind(objs, "Deployment")
        driver = m.container(controller, "nfs-csi-driver")
        assert driver is not None
        assert m.flags(driver)["storage"] == "userspace"
        security = driver["securityContext"]
        assert security["privileged"] is False and security["allowPrivilegeEscalation"] is False
        assert security["runAsNonRoot"] is True and security["capabilities"]["drop"] == ["ALL"]
        assert "add" not in security["capabilities"]
        assert [v for v in m.pod_spec(controller).get("volumes", []) if "hostPath" in v] == []
        assert all(v["mountPath"] != "/var/lib/nfs-csi/shares" for v in driver.get("volumeMounts", []))

    def test_the_node_plugin_still_mounts(self, built: dict[str, Built]) -> None:
        (node,) = m.of_kind(built["prod-userspace"].objs, "DaemonSet")
        driver = m.container(node, "nfs-csi-driver")
        assert driver is not None and driver["securityContext"]["privileged"] is True


class TestNodeOnly:
    def test_only_the_node_plugin_and_its_csidriver_are_deployed(self, built: dict[str, Built]) -> None:
        objs = built["node-only"].objs
        assert m.of_kind(objs, "Deployment") == [] and m.of_kind(objs, "StorageClass") == []
        assert [k for k in ("ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding") if m.of_kind(objs, k)] == []
        (node,) = m.of_kind(objs, "DaemonSet")
        assert m.flags(m.container(node, "nfs-csi-driver") or {})["mode"] == "node"
        assert len(m.of_kind(objs, "CSIDriver")) == 1


@pytest.fixture(scope="module")
def example(tools: Tools, tmp_path_factory: pytest.TempPathFactory) -> Built:
    """deploy/examples/static, built."""
    text = m.build(tools.kustomize, ROOT / "deploy" / "examples" / "static")
    path = tmp_path_factory.mktemp("example") / "static.yaml"
    path.write_text(text)
    return Built("examples/static", path, m.load(text))


class TestStaticExample:
    def test_the_static_pv_and_pvc_validate_strictly(self, tools: Tools, example: Built) -> None:
        assert m.kubernetes_validate(tools.kubernetes_validate, example.path) == []

    def test_the_pv_names_this_driver_and_a_share_the_node_accepts(self, built: dict[str, Built], example: Built) -> None:
        (driver,) = m.of_kind(built["node-only"].objs, "CSIDriver")
        (pv,) = m.of_kind(example.objs, "PersistentVolume")
        (pvc,) = m.of_kind(example.objs, "PersistentVolumeClaim")
        csi = pv["spec"]["csi"]
        assert csi["driver"] == driver["metadata"]["name"]
        assert pvc["spec"]["volumeName"] == pv["metadata"]["name"] and pvc["spec"]["storageClassName"] == ""
        from domain.static import ContextVolume

        assert ContextVolume.from_context(csi["volumeAttributes"]) is not None  # the node's own validation


# The storage.k8s.io/v1 VolumeAttributesClass is served from Kubernetes 1.34: the example is validated from there.
VAC_KUBERNETES_VERSIONS = tuple(v for v in m.KUBERNETES_VERSIONS if tuple(map(int, v.split(".")[:2])) >= (1, 34))


@pytest.fixture(scope="module")
def vac_example(tools: Tools, tmp_path_factory: pytest.TempPathFactory) -> Built:
    """deploy/examples/volumeattributesclass, built."""
    text = m.build(tools.kustomize, ROOT / "deploy" / "examples" / "volumeattributesclass")
    path = tmp_path_factory.mktemp("example") / "volumeattributesclass.yaml"
    path.write_text(text)
    return Built("examples/volumeattributesclass", path, m.load(text))


class TestVolumeAttributesClassExample:
    def test_validates_strictly_where_volumeattributesclass_is_ga(self, tools: Tools, vac_example: Built) -> None:
        assert VAC_KUBERNETES_VERSIONS
        assert m.kubernetes_validate(tools.kubernetes_validate, vac_example.path, VAC_KUBERNETES_VERSIONS) == []

    def test_classes_name_this_driver_and_parameters_it_can_modify(
        self, built: dict[str, Built], vac_example: Built
    ) -> None:
        from domain.parameters import parse_mutable

        (driver,) = m.of_kind(built["base"].objs, "CSIDriver")
        classes = m.of_kind(vac_example.objs, "VolumeAttributesClass")
        assert len(classes) >= 2, "an example of changing classes needs two"
        for vac in classes:
            assert vac["driverName"] == driver["metadata"]["name"]
            assert set(parse_mutable(vac["parameters"])) == {"mountPermissions"}  # the driver's own validation

    def test_the_pvc_names_an_example_class_and_the_base_storageclass(
        self, built: dict[str, Built], vac_example: Built
    ) -> None:
        (pvc,) = m.of_kind(vac_example.objs, "PersistentVolumeClaim")
        classes = {c["metadata"]["name"] for c in m.of_kind(vac_example.objs, "VolumeAttributesClass")}
        storage_classes = {sc["metadata"]["name"] for sc in m.of_kind(built["base"].objs, "StorageClass")}
        assert pvc["spec"]["volumeAttributesClassName"] in classes
        assert pvc["spec"]["storageClassName"] in storage_classes


class TestCsiDriverNfsInPlace:
    def test_this_driver_takes_csi_driver_nfss_name_everywhere(self, built: dict[str, Built]) -> None:
        objs = built["csi-driver-nfs-in-place"].objs
        (driver,) = m.of_kind(objs, "CSIDriver")
        assert driver["metadata"]["name"] == "nfs.csi.k8s.io"
        assert m.check_driver_name(objs) == []  # the classes and every --drivername follow it

    def test_the_controller_handles_their_volumes_and_their_classes_are_left_alone(self, built: dict[str, Built]) -> None:
        objs = built["csi-driver-nfs-in-place"].objs
        controller = m.controller_of(objs)
        assert controller is not None and m.flags(controller[1]).get("manage-csi-driver-nfs-volumes") == "true"
        (node,) = m.of_kind(objs, "DaemonSet")
        assert "manage-csi-driver-nfs-volumes" not in m.flags(m.container(node, "nfs-csi-driver") or {})
        names = {o["metadata"]["name"] for o in [*m.of_kind(objs, "StorageClass"), *m.of_kind(objs, "VolumeSnapshotClass")]}
        assert names == {"nfs-takeover-example"}  # never one of csi-driver-nfs's own class names


@pytest.fixture(scope="module")
def cdn_example(tools: Tools, tmp_path_factory: pytest.TempPathFactory) -> Built:
    """deploy/examples/csi-driver-nfs, built: the cluster e2e's PV with a csi-driver-nfs handle."""
    text = m.build(tools.kustomize, ROOT / "deploy" / "examples" / "csi-driver-nfs")
    path = tmp_path_factory.mktemp("example") / "csi-driver-nfs.yaml"
    path.write_text(text)
    return Built("examples/csi-driver-nfs", path, m.load(text))


class TestCsiDriverNfsExample:
    def test_validates_strictly(self, tools: Tools, cdn_example: Built) -> None:
        assert m.kubernetes_validate(tools.kubernetes_validate, cdn_example.path) == []

    def test_the_pv_is_theirs_under_this_drivers_name_and_the_pod_mounts_its_claim(
        self, built: dict[str, Built], cdn_example: Built
    ) -> None:
        from domain.model import CsiDriverNfsVolumeId
        from domain.static import ContextVolume

        (driver,) = m.of_kind(built["base"].objs, "CSIDriver")
        (pv,) = m.of_kind(cdn_example.objs, "PersistentVolume")
        (pvc,) = m.of_kind(cdn_example.objs, "PersistentVolumeClaim")
        (pod,) = m.of_kind(cdn_example.objs, "Pod")
        csi = pv["spec"]["csi"]
        assert csi["driver"] == driver["metadata"]["name"] and pv["spec"]["persistentVolumeReclaimPolicy"] == "Retain"
        handle = CsiDriverNfsVolumeId.parse(csi["volumeHandle"])
        context = ContextVolume.from_context(csi["volumeAttributes"])  # the node's own validation
        assert handle is not None and context is not None and handle.source == context.source
        assert handle.subdir == pv["metadata"]["name"]  # csi-driver-nfs's default: the PV's name
        assert pvc["spec"]["volumeName"] == pv["metadata"]["name"]
        assert pv["spec"]["claimRef"]["name"] == pvc["metadata"]["name"] == pod["spec"]["volumes"][0]["persistentVolumeClaim"]["claimName"]
        assert pv["spec"]["claimRef"]["namespace"] == pvc["metadata"]["namespace"] == pod["metadata"]["namespace"]
