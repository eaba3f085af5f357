"""The floor's gRPC server: Identity.Probe answers an empty ProbeResponse, on the same thread pool as the driver's."""

from __future__ import annotations

import signal
import sys
import threading
from concurrent import futures

import grpc

from adapters.csi.v1 import csi_pb2 as csi
from adapters.csi.v1 import csi_pb2_grpc as csi_grpc


class EmptyIdentity(csi_grpc.IdentityServicer):
    def Probe(self, request: csi.ProbeRequest, context: grpc.ServicerContext) -> csi.ProbeResponse:
        return csi.ProbeResponse()


def main(address: str, workers: int) -> int:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=workers))
    csi_grpc.add_IdentityServicer_to_server(EmptyIdentity(), server)
    if server.add_insecure_port(address) == 0:
        print(f"emptyserver: cannot listen on {address}", file=sys.stderr)
        return 1
    stopping = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopping.set())
    server.start()
    stopping.wait()
    server.stop(1).wait()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], int(sys.argv[2])))
