"""Demo client: one volume through its whole lifecycle, printing each CSI call and its result."""

from __future__ import annotations

import os
import sys
import time

import grpc
from google.protobuf import text_format

from adapters.csi.v1 import csi_pb2 as csi
from adapters.csi.v1 import csi_pb2_grpc as csi_grpc


def call(name: str, method, request):  # type: ignore[no-untyped-def]
    started = time.perf_counter()
    response = method(request, timeout=30)
    elapsed = (time.perf_counter() - started) * 1000
    shown = text_format.MessageToString(response, as_one_line=True) or "{}"
    print(f"{name:<20} OK   {elapsed:7.1f} ms  {shown}")
    return response


def main(endpoint: str, server: str, share: str, pod_dir: str) -> int:
    channel = grpc.insecure_channel(endpoint.replace("unix://", "unix:", 1))
    grpc.channel_ready_future(channel).result(timeout=15)
    identity, controller, node = csi_grpc.IdentityStub(channel), csi_grpc.ControllerStub(channel), csi_grpc.NodeStub(channel)
    capability = csi.VolumeCapability(
        mount=csi.VolumeCapability.MountVolume(),
        access_mode=csi.VolumeCapability.AccessMode(mode=csi.VolumeCapability.AccessMode.MULTI_NODE_MULTI_WRITER),
    )
    call("GetPluginInfo", identity.GetPluginInfo, csi.GetPluginInfoRequest())
    call("Probe", identity.Probe, csi.ProbeRequest())
    volume = call(
        "CreateVolume",
        controller.CreateVolume,
        csi.CreateVolumeRequest(
            name="pvc-demo",
            capacity_range=csi.CapacityRange(required_bytes=1 << 30),
            volume_capabilities=[capability],
            parameters={"server": server, "share": share},
        ),
    ).volume
    os.makedirs(pod_dir, exist_ok=True)
    target = os.path.join(pod_dir, "mount")
    call(
        "NodePublishVolume",
        node.NodePublishVolume,
        csi.NodePublishVolumeRequest(volume_id=volume.volume_id, target_path=target, volume_capability=capability),
    )
    with open(os.path.join(target, "hello.txt"), "w") as handle:
        handle.write("written through the published volume\n")
    with open(os.path.join(target, "hello.txt")) as handle:
        print(f"{'write + read back':<20} OK   {target}/hello.txt: {handle.read().strip()!r}")
    call(
        "NodeUnpublishVolume",
        node.NodeUnpublishVolume,
        csi.NodeUnpublishVolumeRequest(volume_id=volume.volume_id, target_path=target),
    )
    assert not os.path.exists(target), "target path should be gone after NodeUnpublishVolume"
    call("DeleteVolume", controller.DeleteVolume, csi.DeleteVolumeRequest(volume_id=volume.volume_id))
    print("lifecycle complete: success")
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:5]))
