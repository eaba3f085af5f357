"""Each check fails, with a message that says what is wrong, on a deliberately broken copy of an overlay."""

from __future__ import annotations

from typing import Any, Callable

import pytest
import yaml

from tests.deploy import manifests as m
from tests.deploy.conftest import Built
from tests.deploy.manifests import Tools

BuildBroken = Callable[[str, dict[str, Any]], Built]


def json_patch(kind: str, name: str, *operations: dict[str, Any]) -> dict[str, Any]:
    return {"target": {"kind": kind, "name": name}, "patch": yaml.safe_dump(list(operations))}


def container_patch(kind: str, name: str, container: dict[str, Any]) -> dict[str, Any]:
    return {
        "patch": yaml.safe_dump(
            {
                "apiVersion": "apps/v1",
                "kind": kind,
                "metadata": {"name": name, "namespace": "nfs-csi"},
                "spec": {"template": {"spec": {"containers": [container]}}},
            }
        )
    }


def with_arg(built: Built, kind: str, name: str, replace: str) -> dict[str, Any]:
    """A patch that sets one --flag=value of a container, keeping its other arguments."""
    (workload,) = m.of_kind(built.objs, kind)
    c = m.container(workload, name)
    assert c is not None
    flag = replace.partition("=")[0]
    args = [replace if a.partition("=")[0] == flag else a for a in c["args"]]
    assert replace in args, f"{name} has no {flag}"
    return container_patch(kind, workload["metadata"]["name"], {"name": name, "args": args})


def test_a_changed_driver_name_in_the_storageclass_fails_the_driver_name_check(build_broken: BuildBroken) -> None:
    broken = build_broken(
        "prod",
        {
            "patches": [
                json_patch(
                    "StorageClass", "nfs", {"op": "replace", "path": "/provisioner", "value": "nfs.csi.example.org"}
                )
            ]
        },
    )

    assert m.check_driver_name(broken.objs) == [
        "StorageClass nfs: provisioner 'nfs.csi.example.org' is not the CSIDriver's name 'nfs.csi.ownedstorage.dev'"
    ]


def test_an_unknown_field_in_a_container_fails_strict_kubernetes_validation(
    build_broken: BuildBroken, tools: Tools
) -> None:
    typo = {"name": "csi-resizer", "imagePullPolicyy": "Always"}
    broken = build_broken("prod", {"patches": [container_patch("Deployment", "nfs-csi-controller", typo)]})

    problems = m.kubernetes_validate(tools.kubernetes_validate, broken.path)

    assert len(problems) == len(m.KUBERNETES_VERSIONS)
    for problem, version in zip(problems, m.KUBERNETES_VERSIONS, strict=True):
        assert "resource deployment/nfs-csi-controller" in problem
        assert f"against version {version.rpartition('.')[0]}" in problem
        assert "Additional properties are not allowed ('imagePullPolicyy' was unexpected)" in problem


@pytest.mark.parametrize(
    ("image", "reason"),
    [
        ("registry.k8s.io/sig-storage/csi-resizer:latest", "is not pinned to an exact version"),
        ("registry.k8s.io/sig-storage/csi-resizer", "has no tag, so it means latest"),
        ("registry.k8s.io/sig-storage/csi-resizer:v2", "is not pinned to an exact version"),
    ],
)
def test_an_unpinned_image_fails_the_pinning_check(build_broken: BuildBroken, image: str, reason: str) -> None:
    broken = build_broken(
        "prod",
        {"patches": [container_patch("Deployment", "nfs-csi-controller", {"name": "csi-resizer", "image": image})]},
    )

    assert m.check_images_pinned(broken.objs) == [
        f"Deployment/nfs-csi-controller container csi-resizer: image {image!r} {reason}"
    ]


def test_an_image_pinned_by_digest_passes_the_pinning_check(build_broken: BuildBroken) -> None:
    image = "registry.k8s.io/sig-storage/csi-resizer@sha256:" + "0" * 64
    broken = build_broken(
        "prod",
        {"patches": [container_patch("Deployment", "nfs-csi-controller", {"name": "csi-resizer", "image": image})]},
    )

    assert m.check_images_pinned(broken.objs) == []


def test_a_registrar_pointing_kubelet_elsewhere_fails_the_socket_check(
    build_broken: BuildBroken, built: dict[str, Built]
) -> None:
    wrong = "/var/lib/kubelet/plugins/nfs.csi.k8s.io/csi.sock"
    patch = with_arg(built["prod"], "DaemonSet", "node-driver-registrar", f"--kubelet-registration-path={wrong}")
    broken = build_broken("prod", {"patches": [patch]})

    assert m.check_sockets(broken.objs) == [
        f"DaemonSet/nfs-csi-node: node-driver-registrar tells kubelet the socket is at {wrong}, but on the host it is at "
        "/var/lib/kubelet/plugins/nfs.csi.ownedstorage.dev/csi.sock"
    ]


def test_a_sidecar_on_another_socket_fails_the_socket_check(build_broken: BuildBroken, built: dict[str, Built]) -> None:
    patch = with_arg(built["dev"], "Deployment", "csi-provisioner", "--csi-address=/csi/provisioner.sock")
    broken = build_broken("dev", {"patches": [patch]})

    assert m.check_sockets(broken.objs) == [
        "Deployment/nfs-csi-controller: csi-provisioner looks for the CSI socket at /csi/provisioner.sock (volume:path "
        "('socket-dir', 'provisioner.sock')) but the driver listens at /csi/csi.sock (volume:path ('socket-dir', 'csi.sock'))"
    ]


def test_a_node_driver_without_bidirectional_propagation_fails_the_node_check(build_broken: BuildBroken) -> None:
    mount = {"name": "kubelet-dir", "mountPath": "/var/lib/kubelet", "mountPropagation": None}
    patch = container_patch("DaemonSet", "nfs-csi-node", {"name": "nfs-csi-driver", "volumeMounts": [mount]})
    broken = build_broken("prod", {"patches": [patch]})

    assert m.check_node_plugin(broken.objs) == [
        "DaemonSet/nfs-csi-node: the node driver mounts /var/lib/kubelet without mountPropagation: Bidirectional, "
        "so kubelet and the pods would not see its mounts"
    ]


def test_a_monitor_scraping_another_port_fails_the_metrics_check(build_broken: BuildBroken) -> None:
    broken = build_broken(
        "prod",
        {
            "patches": [
                json_patch(
                    "Service", "nfs-csi-metrics", {"op": "replace", "path": "/spec/ports/0/targetPort", "value": 9808}
                )
            ]
        },
    )

    assert m.check_metrics(broken.objs) == [
        "ServiceMonitor/nfs-csi-driver scrapes Deployment/nfs-csi-controller on port 9808, but its driver serves metrics on 29680",
        "ServiceMonitor/nfs-csi-driver scrapes DaemonSet/nfs-csi-node on port 9808, but its driver serves metrics on 29680",
    ]


def test_a_snapshot_class_outside_its_crd_fails_crd_validation(build_broken: BuildBroken, tools: Tools) -> None:
    broken = build_broken(
        "prod",
        {
            "patches": [
                json_patch(
                    "VolumeSnapshotClass",
                    "nfs",
                    {"op": "replace", "path": "/deletionPolicy", "value": "Keep"},
                    {"op": "add", "path": "/parameterz", "value": {}},
                )
            ]
        },
    )

    assert m.validate_custom_resources(broken.objs, tools.crds) == [
        "VolumeSnapshotClass/nfs does not match its CRD: (top level): Additional properties are not allowed ('parameterz' was unexpected)",
        "VolumeSnapshotClass/nfs does not match its CRD: deletionPolicy: 'Keep' is not one of ['Delete', 'Retain']",
    ]


def test_an_unknown_field_in_a_servicemonitor_fails_crd_validation(build_broken: BuildBroken, tools: Tools) -> None:
    broken = build_broken(
        "prod",
        {
            "patches": [
                json_patch(
                    "ServiceMonitor",
                    "nfs-csi-driver",
                    {"op": "add", "path": "/spec/endpoints/0/intervall", "value": "30s"},
                )
            ]
        },
    )

    assert m.validate_custom_resources(broken.objs, tools.crds) == [
        "ServiceMonitor/nfs-csi-driver does not match its CRD: spec.endpoints.0: Additional properties are not allowed ('intervall' was unexpected)"
    ]


def test_volume_attributes_class_turned_off_fails_the_capability_and_rbac_checks(
    build_broken: BuildBroken, built: dict[str, Built]
) -> None:
    patches = []
    for sidecar in m.VAC_SIDECARS:
        (controller,) = m.of_kind(built["prod"].objs, "Deployment")
        c = m.container(controller, sidecar)
        assert c is not None
        args = [*c["args"], "--feature-gates=VolumeAttributesClass=false"]
        patches.append(container_patch("Deployment", "nfs-csi-controller", {"name": sidecar, "args": args}))
    broken = build_broken("prod", {"patches": patches})

    assert m.check_capabilities(broken.objs) == [
        "Deployment/nfs-csi-controller: the driver serves MODIFY_VOLUME, but csi-provisioner turns VolumeAttributesClass off",
        "Deployment/nfs-csi-controller: the driver serves MODIFY_VOLUME, but csi-resizer turns VolumeAttributesClass off",
    ]
    assert m.check_rbac(broken.objs) == [
        "ClusterRole/nfs-csi-provisioner: grants get, list, watch on volumeattributesclasses (storage.k8s.io), which "
        "no sidecar of Deployment/nfs-csi-controller needs",
        "ClusterRole/nfs-csi-resizer: grants get, list, watch on volumeattributesclasses (storage.k8s.io), which no "
        "sidecar of Deployment/nfs-csi-controller needs",
    ]


def test_a_resizer_without_volumeattributesclass_rbac_fails_the_rbac_check(build_broken: BuildBroken) -> None:
    broken = build_broken(
        "prod",
        {
            "patches": [
                json_patch(
                    "ClusterRole",
                    "nfs-csi-resizer",
                    {"op": "test", "path": "/rules/4/resources", "value": ["volumeattributesclasses"]},
                    {"op": "remove", "path": "/rules/4"},
                ),
                json_patch(
                    "ClusterRole",
                    "nfs-csi-provisioner",
                    {"op": "test", "path": "/rules/6/resources", "value": ["volumeattributesclasses"]},
                    {"op": "remove", "path": "/rules/6"},
                ),
            ]
        },
    )

    assert m.check_rbac(broken.objs) == [
        f"Deployment/nfs-csi-controller: {sidecar} may not {verb} volumeattributesclasses"
        for sidecar in ("csi-provisioner", "csi-resizer")
        for verb in ("get", "list", "watch")
    ]


def test_a_permission_no_sidecar_needs_fails_the_rbac_check(build_broken: BuildBroken) -> None:
    rule = {"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch"]}
    broken = build_broken(
        "prod",
        {"patches": [json_patch("ClusterRole", "nfs-csi-resizer", {"op": "add", "path": "/rules/-", "value": rule})]},
    )

    assert m.check_rbac(broken.objs) == [
        "ClusterRole/nfs-csi-resizer: grants get, list, watch on pods, which no sidecar of "
        "Deployment/nfs-csi-controller needs"
    ]


def test_a_resizer_that_handles_volume_in_use_errors_needs_pods(
    build_broken: BuildBroken, built: dict[str, Built]
) -> None:
    patch = with_arg(built["prod"], "Deployment", "csi-resizer", "--handle-volume-inuse-error=true")
    broken = build_broken("prod", {"patches": [patch]})

    assert m.check_rbac(broken.objs) == [
        f"Deployment/nfs-csi-controller: csi-resizer may not {verb} pods" for verb in ("get", "list", "watch")
    ]


def test_a_storageclass_share_missing_from_the_controllers_shares_fails_the_shares_check(
    build_broken: BuildBroken,
) -> None:
    env = [{"name": "NFS_SHARES", "value": "nfs-server.example.com:/exports"}]
    patch = container_patch("Deployment", "nfs-csi-controller", {"name": "nfs-csi-driver", "env": env})
    broken = build_broken("dev", {"patches": [patch]})

    assert m.check_shares(broken.objs) == [
        "StorageClass/nfs-in-cluster names the share nfs-server.nfs-server.svc.cluster.local:/exports, which the "
        "controller's --shares ('nfs-server.example.com:/exports') does not list"
    ]


def test_a_malformed_shares_list_fails_the_driver_arguments_check(build_broken: BuildBroken) -> None:
    env = [{"name": "NFS_SHARES", "value": "nfs-server.example.com/exports"}]
    broken = build_broken(
        "prod-userspace",
        {"patches": [container_patch("Deployment", "nfs-csi-controller", {"name": "nfs-csi-driver", "env": env})]},
    )

    assert m.check_driver_args(broken.objs) == [
        "Deployment/nfs-csi-controller: the driver refuses its arguments: nfs-csi-driver: error: --shares: share "
        "'nfs-server.example.com/exports' must be written server:/path"
    ]


def test_a_snapshotter_that_gives_up_before_the_driver_fails_the_timeout_check(
    build_broken: BuildBroken, built: dict[str, Built]
) -> None:
    patch = with_arg(built["prod"], "Deployment", "csi-snapshotter", "--timeout=300s")
    broken = build_broken("prod", {"patches": [patch]})

    assert m.check_timeouts(broken.objs) == [
        "Deployment/nfs-csi-controller: csi-snapshotter gives up on a call after 300s, but the driver may take 780 s "
        "(--snapshot-timeout 600 s after up to 3 mounts of --mount-timeout 60 s)"
    ]


def test_a_storageclass_without_expansion_fails_the_capability_check(build_broken: BuildBroken) -> None:
    broken = build_broken(
        "prod",
        {
            "patches": [
                json_patch("StorageClass", "nfs", {"op": "replace", "path": "/allowVolumeExpansion", "value": False})
            ]
        },
    )

    assert m.check_capabilities(broken.objs) == [
        "StorageClass nfs: allowVolumeExpansion is not true, though the driver expands volumes (VolumeExpansion.ONLINE)"
    ]


def test_ephemeral_volumes_without_the_node_flag_fail_the_csidriver_check(build_broken: BuildBroken) -> None:
    broken = build_broken(
        "node-only",
        {
            "patches": [
                json_patch(
                    "CSIDriver",
                    "nfs.csi.ownedstorage.dev",
                    {"op": "add", "path": "/spec/volumeLifecycleModes/-", "value": "Ephemeral"},
                )
            ]
        },
    )

    assert m.check_csidriver(broken.objs) == [
        "CSIDriver: volumeLifecycleModes ['Persistent', 'Ephemeral'] but the node plugin does not serve inline "
        "volumes (--enable-inline-volumes)"
    ]
