"""Server interceptors that keep the driver answering: a reserved path for quick calls, and garbage refused cleanly."""

from __future__ import annotations

from concurrent import futures
from typing import Any

import grpc

# Calls that never mount, unmount or touch a share. They run on threads of their own, so the livenessprobe and the
# sidecars' capability calls are answered even while every gRPC worker is stuck on a hung server.
QUICK_CALLS = frozenset(
    {"GetPluginInfo", "GetPluginCapabilities", "Probe", "ControllerGetCapabilities", "NodeGetCapabilities", "NodeGetInfo"}
)
QUICK_WORKERS = 2


class ReservedPath(grpc.ServerInterceptor):
    """Serve QUICK_CALLS from a small pool of their own (gRPC's per-method thread pool), never queued behind slow calls.

    Put it first: gRPC takes the pool from the outermost handler.
    """

    def __init__(self, pool: futures.ThreadPoolExecutor | None = None) -> None:
        self.pool = pool or futures.ThreadPoolExecutor(max_workers=QUICK_WORKERS, thread_name_prefix="csi-quick")

    def intercept_service(self, continuation: Any, handler_call_details: grpc.HandlerCallDetails) -> Any:
        handler = continuation(handler_call_details)
        if handler is None or handler.unary_unary is None:
            return handler
        if handler_call_details.method.rsplit("/", 1)[-1] not in QUICK_CALLS:
            return handler
        behavior = handler.unary_unary

        def quick(request: Any, context: grpc.ServicerContext) -> Any:
            return behavior(request, context)

        quick.experimental_thread_pool = self.pool  # type: ignore[attr-defined]
        return grpc.unary_unary_rpc_method_handler(
            quick, request_deserializer=handler.request_deserializer, response_serializer=handler.response_serializer
        )


class _Undecodable:
    def __init__(self, kind: str) -> None:
        self.kind = kind


class DecodeGuard(grpc.ServerInterceptor):
    """A request that does not parse as its message is INVALID_ARGUMENT (gRPC alone would answer INTERNAL)."""

    def intercept_service(self, continuation: Any, handler_call_details: grpc.HandlerCallDetails) -> Any:
        handler = continuation(handler_call_details)
        if handler is None or handler.unary_unary is None or handler.request_deserializer is None:
            return handler
        deserialize = handler.request_deserializer
        kind = getattr(getattr(deserialize, "__self__", None), "__name__", "request")
        inner = handler.unary_unary

        def tolerant(raw: bytes) -> Any:
            try:
                return deserialize(raw)
            except Exception:  # noqa: BLE001 - any decode failure is the caller's bad input
                return _Undecodable(kind)

        def guarded(request: Any, context: grpc.ServicerContext) -> Any:
            if isinstance(request, _Undecodable):
                context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"the request is not a valid {request.kind} message")
            return inner(request, context)

        return grpc.unary_unary_rpc_method_handler(
            guarded, request_deserializer=tolerant, response_serializer=handler.response_serializer
        )
