"""A CSI client over one channel: the calls the benchmark makes, each returning its status code name."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

import grpc

from adapters.csi.v1 import csi_pb2 as csi
from adapters.csi.v1 import csi_pb2_grpc as csi_grpc

OK = "OK"

# Reconnect quickly: the start-to-ready figure must not include gRPC's default 1 s reconnect backoff.
CHANNEL_OPTIONS = [
    ("grpc.initial_reconnect_backoff_ms", 5),
    ("grpc.min_reconnect_backoff_ms", 5),
    ("grpc.max_reconnect_backoff_ms", 50),
]


def grpc_target(endpoint: str) -> str:
    """unix:///path or tcp://host:port, as the CSI sidecars take it, to a gRPC target."""
    if endpoint.startswith("unix://"):
        return "unix:" + endpoint[len("unix://") :]
    if endpoint.startswith("tcp://"):
        return endpoint[len("tcp://") :]
    return endpoint


def socket_path(endpoint: str) -> str | None:
    return endpoint[len("unix://") :] if endpoint.startswith("unix://") else None


def capability() -> csi.VolumeCapability:
    return csi.VolumeCapability(
        mount=csi.VolumeCapability.MountVolume(),
        access_mode=csi.VolumeCapability.AccessMode(mode=csi.VolumeCapability.AccessMode.MULTI_NODE_MULTI_WRITER),
    )


@dataclass(frozen=True)
class Volume:
    volume_id: str
    context: dict[str, str] = field(default_factory=dict)


class Client:
    def __init__(self, endpoint: str, parameters: dict[str, str], timeout: float = 30.0) -> None:
        self.channel = grpc.insecure_channel(grpc_target(endpoint), options=CHANNEL_OPTIONS)
        self.identity = csi_grpc.IdentityStub(self.channel)
        self.controller = csi_grpc.ControllerStub(self.channel)
        self.node = csi_grpc.NodeStub(self.channel)
        self.parameters = dict(parameters)
        self.timeout = timeout
        self._capability = capability()
        self._lock = threading.Lock()
        self.calls = 0
        """CSI calls sent so far on this client, Probe excluded."""

    def count(self) -> None:
        with self._lock:
            self.calls += 1

    def close(self) -> None:
        self.channel.close()

    def probe(self, timeout: float | None = None, wait_for_ready: bool = False) -> bool:
        response = self.identity.Probe(
            csi.ProbeRequest(), timeout=timeout or self.timeout, wait_for_ready=wait_for_ready
        )
        return not response.HasField("ready") or response.ready.value

    def create_request(self, name: str) -> csi.CreateVolumeRequest:
        return csi.CreateVolumeRequest(
            name=name,
            capacity_range=csi.CapacityRange(required_bytes=1 << 30),
            volume_capabilities=[self._capability],
            parameters=self.parameters,
        )

    def create(self, name: str) -> tuple[str, Volume | None]:
        self.count()
        try:
            response = self.controller.CreateVolume(self.create_request(name), timeout=self.timeout)
        except grpc.RpcError as err:
            return code_name(err), None
        return OK, Volume(response.volume.volume_id, dict(response.volume.volume_context))

    def delete(self, volume_id: str) -> str:
        return self._unary(self.controller.DeleteVolume, csi.DeleteVolumeRequest(volume_id=volume_id))

    def publish_request(self, volume: Volume, target: str) -> csi.NodePublishVolumeRequest:
        return csi.NodePublishVolumeRequest(
            volume_id=volume.volume_id,
            target_path=target,
            volume_capability=self._capability,
            volume_context=volume.context,
        )

    def publish(self, volume: Volume, target: str) -> str:
        return self._unary(self.node.NodePublishVolume, self.publish_request(volume, target))

    def unpublish(self, volume_id: str, target: str) -> str:
        return self._unary(
            self.node.NodeUnpublishVolume, csi.NodeUnpublishVolumeRequest(volume_id=volume_id, target_path=target)
        )

    def stats(self, volume_id: str, path: str) -> str:
        """NodeGetVolumeStats; ABNORMAL when the driver answers but reports the volume's condition abnormal."""
        self.count()
        request = csi.NodeGetVolumeStatsRequest(volume_id=volume_id, volume_path=path)
        try:
            response = self.node.NodeGetVolumeStats(request, timeout=self.timeout)
        except grpc.RpcError as err:
            return code_name(err)
        return "ABNORMAL" if response.volume_condition.abnormal else OK

    def _unary(self, method, request) -> str:  # type: ignore[no-untyped-def]
        self.count()
        try:
            method(request, timeout=self.timeout)
        except grpc.RpcError as err:
            return code_name(err)
        return OK


def code_name(err: grpc.RpcError) -> str:
    code = err.code() if hasattr(err, "code") else None
    return code.name if isinstance(code, grpc.StatusCode) else "UNKNOWN"

