"""A stand-in for node-driver-registrar, for the e2e cluster only (its image is not reachable from the test machines).

It does what the upstream sidecar does for kubelet's plugin watcher (pluginregistration v1): asks the driver for its
name (GetPluginInfo over --csi-address), serves Registration.GetInfo / NotifyRegistrationStatus on
<registration dir>/<driver>-reg.sock, answering with --kubelet-registration-path as the endpoint, exits when kubelet
reports a failed registration, and serves /healthz on --http-endpoint (200 once kubelet has registered the plugin).
It runs on the driver image's Python (grpcio, protobuf and the CSI stubs are there).
"""

from __future__ import annotations

import argparse
import http.server
import logging
import os
import signal
import sys
import threading
import time
from concurrent import futures

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

from adapters.csi.v1 import csi_pb2, csi_pb2_grpc

log = logging.getLogger("registrar")


def registration_messages() -> dict[str, type]:
    """The messages of k8s.io/kubelet/pkg/apis/pluginregistration/v1/api.proto (package pluginregistration)."""
    f = descriptor_pb2.FileDescriptorProto(name="pluginregistration/api.proto", package="pluginregistration", syntax="proto3")
    string, boolean = descriptor_pb2.FieldDescriptorProto.TYPE_STRING, descriptor_pb2.FieldDescriptorProto.TYPE_BOOL
    optional, repeated = descriptor_pb2.FieldDescriptorProto.LABEL_OPTIONAL, descriptor_pb2.FieldDescriptorProto.LABEL_REPEATED
    fields = {
        "PluginInfo": [("type", 1, string, optional), ("name", 2, string, optional), ("endpoint", 3, string, optional),
                       ("supported_versions", 4, string, repeated)],
        "RegistrationStatus": [("plugin_registered", 1, boolean, optional), ("error", 2, string, optional)],
        "RegistrationStatusResponse": [],
        "InfoRequest": [],
    }
    for name, members in fields.items():
        message = f.message_type.add(name=name)
        for field_name, number, kind, label in members:
            message.field.add(name=field_name, number=number, type=kind, label=label)
    pool = descriptor_pool.DescriptorPool()
    pool.Add(f)
    return {name: message_factory.GetMessageClass(pool.FindMessageTypeByName(f"pluginregistration.{name}")) for name in fields}


def driver_name(csi_address: str) -> str:
    """GetPluginInfo, retried until the driver answers (it may start after this container)."""
    target = csi_address if csi_address.startswith("unix:") else f"unix://{csi_address}"
    while True:
        try:
            with grpc.insecure_channel(target) as channel:
                info = csi_pb2_grpc.IdentityStub(channel).GetPluginInfo(csi_pb2.GetPluginInfoRequest(), timeout=10)
                return str(info.name)
        except grpc.RpcError as err:
            log.info("waiting for the driver at %s: %s", csi_address, err.code())
            time.sleep(1)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--csi-address", required=True)
    parser.add_argument("--kubelet-registration-path", required=True)
    parser.add_argument("--plugin-registration-path", default="/registration")
    parser.add_argument("--http-endpoint", default="")
    parser.add_argument("--v", default="0")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s registrar %(message)s", stream=sys.stderr)

    messages = registration_messages()
    name = driver_name(args.csi_address)
    registered = threading.Event()
    failed: list[str] = []

    def get_info(request: object, context: grpc.ServicerContext) -> object:
        log.info("kubelet asked for plugin info: %s at %s", name, args.kubelet_registration_path)
        return messages["PluginInfo"](type="CSIPlugin", name=name, endpoint=args.kubelet_registration_path,
                                      supported_versions=["1.0.0"])

    def notify(status: object, context: grpc.ServicerContext) -> object:
        if getattr(status, "plugin_registered"):
            log.info("kubelet registered %s", name)
            registered.set()
        else:
            failed.append(str(getattr(status, "error")))
            log.error("kubelet did not register %s: %s", name, failed[-1])
            os.kill(os.getpid(), signal.SIGTERM)
        return messages["RegistrationStatusResponse"]()

    handlers = {
        "GetInfo": grpc.unary_unary_rpc_method_handler(
            get_info, request_deserializer=messages["InfoRequest"].FromString,
            response_serializer=lambda m: m.SerializeToString()),
        "NotifyRegistrationStatus": grpc.unary_unary_rpc_method_handler(
            notify, request_deserializer=messages["RegistrationStatus"].FromString,
            response_serializer=lambda m: m.SerializeToString()),
    }
    socket_path = os.path.join(args.plugin_registration_path, f"{name}-reg.sock")
    if os.path.exists(socket_path):
        os.unlink(socket_path)
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler("pluginregistration.Registration", handlers)])
    server.add_insecure_port(f"unix://{socket_path}")
    server.start()
    log.info("serving the registration of %s at %s", name, socket_path)

    if args.http_endpoint:
        host, _, port = args.http_endpoint.rpartition(":")

        class Health(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's name)
                ok = self.path == "/healthz" and registered.is_set() and os.path.exists(socket_path)
                body = b"ok" if ok else b"not registered with kubelet"
                self.send_response(200 if ok else 503 if self.path == "/healthz" else 404)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *_: object) -> None:
                pass

        health = http.server.ThreadingHTTPServer((host or "0.0.0.0", int(port)), Health)
        threading.Thread(target=health.serve_forever, daemon=True).start()

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    stop.wait()
    server.stop(grace=1).wait()
    if os.path.exists(socket_path):
        os.unlink(socket_path)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
