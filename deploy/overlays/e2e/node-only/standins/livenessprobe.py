"""A stand-in for the livenessprobe sidecar, for the e2e cluster only (its image is not reachable from the test machines).

As upstream: /healthz on --http-endpoint calls the driver's CSI Probe over --csi-address within --probe-timeout, and
answers 200 when the driver says it is ready (or does not say), 500 otherwise. It runs on the driver image's Python.
"""

from __future__ import annotations

import argparse
import http.server
import logging
import sys

import grpc

from adapters.csi.v1 import csi_pb2, csi_pb2_grpc

log = logging.getLogger("livenessprobe")


def seconds(value: str) -> float:
    """A Go duration of seconds or milliseconds, as the manifests write it: 3s, 500ms."""
    return float(value[:-2]) / 1000 if value.endswith("ms") else float(value.rstrip("s"))


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--csi-address", required=True)
    parser.add_argument("--http-endpoint", default=":9808")
    parser.add_argument("--probe-timeout", default="1s", type=seconds)
    parser.add_argument("--v", default="0")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s livenessprobe %(message)s", stream=sys.stderr)
    target = args.csi_address if args.csi_address.startswith("unix:") else f"unix://{args.csi_address}"
    channel = grpc.insecure_channel(target)
    identity = csi_pb2_grpc.IdentityStub(channel)

    class Health(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's name)
            if self.path != "/healthz":
                code, body = 404, "not found"
            else:
                try:
                    answer = identity.Probe(csi_pb2.ProbeRequest(), timeout=args.probe_timeout)
                    ready = not answer.HasField("ready") or answer.ready.value
                    code, body = (200, "ok") if ready else (500, "driver says it is not ready")
                except grpc.RpcError as err:
                    code, body = 500, f"Probe failed: {err.code()}: {err.details()}"
                if code != 200:
                    log.warning("%s", body)
            data = body.encode()
            self.send_response(code)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *_: object) -> None:
            pass

    host, _, port = args.http_endpoint.rpartition(":")
    http.server.ThreadingHTTPServer((host or "0.0.0.0", int(port)), Health).serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())
