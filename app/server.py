"""Server lifecycle: bind the endpoint safely, serve, drain on SIGTERM, release shares."""

from __future__ import annotations

import logging
import os
import signal
import socket
import stat
import threading
from concurrent import futures
from dataclasses import dataclass

import grpc

from adapters.csi.v1 import csi_pb2_grpc as csi_grpc
from adapters.grpc.admission import DecodeGuard, ReservedPath
from adapters.grpc.limits import FieldLimits
from adapters.grpc.observe import ObservingInterceptor
from app.container import Container
from app.settings import VERSION, Settings
from domain.errors import DomainError

log = logging.getLogger(__name__)


class EndpointInUse(Exception):
    pass


@dataclass(frozen=True)
class Endpoint:
    address: str
    socket_path: str | None

    @classmethod
    def parse(cls, endpoint: str) -> Endpoint:
        if endpoint.startswith("unix://"):
            path = os.path.abspath(endpoint[len("unix://") :])
            return cls(f"unix:{path}", path)
        return cls(endpoint[len("tcp://") :], None)


def clear_stale_socket(path: str) -> None:
    """Remove a socket file no server answers on; refuse to touch a live socket or a non-socket."""
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(mode):
        raise EndpointInUse(f"{path} exists and is not a socket; refusing to replace it")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(1.0)
    try:
        probe.connect(path)
    except (ConnectionRefusedError, FileNotFoundError):
        os.unlink(path)
        log.info("replaced stale socket %s", path)
        return
    finally:
        probe.close()
    raise EndpointInUse(f"another server is listening on {path}")


def build_container(settings: Settings) -> Container:
    container = Container()
    container.config.from_dict(
        {
            "mount_command": settings.mount_command,
            "umount_command": settings.umount_command,
            "mount_timeout": settings.mount_timeout,
            "mount_attempts": settings.mount_attempts,
            "fs_timeout": settings.fs_timeout,
            "snapshot_timeout": settings.snapshot_timeout,
            "share_idle_timeout": settings.share_idle_timeout,
            "max_shares_held": settings.max_shares_held,
            "max_concurrent_mounts": settings.max_concurrent_mounts,
            "allowed_mount_options": settings.allowed_mount_options,
            "inline_volumes": settings.inline_volumes,
            "node_stage": "yes" if settings.node_stage else "no",
            "max_volumes_per_node": settings.max_volumes_per_node,
            "working_mount_dir": settings.working_mount_dir,
            "state_dir": settings.state_dir,
            "default_ondelete_policy": settings.default_ondelete_policy,
            "mount_permissions": settings.mount_permissions,
            "driver_name": settings.driver_name,
            "version": VERSION,
            "node_id": settings.node_id,
            "storage": settings.storage_config(),
            "shares": settings.shares,
            "csi_driver_nfs": {
                "manage": settings.manage_csi_driver_nfs_volumes,
                "default_ondelete_policy": settings.csi_driver_nfs_default_ondelete_policy,
                "remove_archived": settings.csi_driver_nfs_remove_archived_volume_path,
            },
            "share_mount_options": settings.share_mount_options,
            "volume_usage": {
                "on": "yes" if settings.volume_usage_interval > 0 else "no",
                "interval": settings.volume_usage_interval or 1.0,  # unused when off; WalkLimits wants it positive
                "timeout": settings.volume_usage_timeout,
                "max_entries": settings.volume_usage_max_entries,
                "rate": settings.volume_usage_rate,
            },
            # Only a process that mounts needs mount.nfs to be ready: not a userspace-storage controller.
            "probe_mount_helper": "yes" if settings.serves_node or settings.storage == "mount" else "no",
        }
    )
    return container


class DriverServer:
    def __init__(self, settings: Settings, container: Container) -> None:
        self._settings = settings
        self._container = container
        self._endpoint = Endpoint.parse(settings.endpoint)
        self._stopping = threading.Event()
        self._serving = False
        self._server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=settings.workers, thread_name_prefix="csi"),
            # Outermost first: quick calls get threads of their own; garbage is refused before it is logged; an
            # oversized field is refused (and logged, and counted) before any use case runs.
            interceptors=[ReservedPath(), DecodeGuard(), ObservingInterceptor(container.telemetry()), FieldLimits()],
            options=[("grpc.so_reuseport", 0)],
        )

    def not_ready_because(self) -> str | None:
        """None when the gRPC socket serves and the mount helper is present; else the reason."""
        if not self._serving or self._stopping.is_set():
            return "the gRPC server is not serving"
        path = self._endpoint.socket_path
        if path:
            probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            probe.settimeout(0.5)
            try:
                probe.connect(path)
            except OSError as err:
                return f"the gRPC socket {path} does not answer: {err.strerror or err}"
            finally:
                probe.close()
        try:
            self._container.probe()()
        except DomainError as err:
            return str(err)
        return None

    def start(self) -> None:
        c = self._container
        csi_grpc.add_IdentityServicer_to_server(c.identity_servicer(), self._server)
        if self._settings.serves_controller:
            csi_grpc.add_ControllerServicer_to_server(c.controller_servicer(), self._server)
        if self._settings.serves_node:
            csi_grpc.add_NodeServicer_to_server(c.node_servicer(), self._server)
        path = self._endpoint.socket_path
        if path:
            # gRPC creates the socket file when it binds, before it listens: bind under a private name and
            # rename it into place once served, so a client that sees the socket is never refused.
            os.makedirs(os.path.dirname(path), exist_ok=True)
            clear_stale_socket(path)
            binding = f"{path}.binding-{os.getpid()}"
            if os.path.lexists(binding):
                os.unlink(binding)
            previous = os.umask(0o117)
            try:
                self._bind(f"unix:{binding}")
            finally:
                os.umask(previous)
            self._server.start()
            os.chmod(binding, 0o660)
            os.rename(binding, path)
        else:
            self._bind(self._endpoint.address)
            self._server.start()
        self._serving = True
        log.info(
            "serving %s on %s",
            self._settings.mode,
            self._settings.endpoint,
            extra={"driver": self._settings.driver_name, "version": VERSION},
        )

    def _bind(self, address: str) -> None:
        try:
            port = self._server.add_insecure_port(address)
        except RuntimeError as err:
            raise EndpointInUse(f"cannot listen on {self._settings.endpoint}: {err}") from err
        if port == 0:
            raise EndpointInUse(f"cannot listen on {self._settings.endpoint}")

    def request_stop(self, *_: object) -> None:
        self._stopping.set()

    def wait_and_drain(self) -> None:
        # A timed wait: the main thread wakes each second to run the SIGTERM handler, even when the signal was
        # taken by another thread (an untimed wait could sleep through it, and the driver would never stop).
        while not self._stopping.wait(1.0):
            pass
        log.info("stopping: draining calls in flight for up to %s s", self._settings.grace_period)
        self._server.stop(self._settings.grace_period).wait()
        if self._settings.serves_controller:
            self._container.storage().close()
        if self._settings.serves_node and self._settings.volume_usage_interval > 0:
            self._container.usage_meter().close()
        if self._endpoint.socket_path:
            try:
                os.unlink(self._endpoint.socket_path)
            except FileNotFoundError:
                pass
        log.info("stopped")


def install_signal_handlers(server: DriverServer) -> None:
    signal.signal(signal.SIGTERM, server.request_stop)
    signal.signal(signal.SIGINT, server.request_stop)
