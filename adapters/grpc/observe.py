"""A server interceptor that times every unary CSI call and reports method, code and duration."""

from __future__ import annotations

import time
from typing import Any, Callable

import grpc

Observer = Callable[[str, str, float, str], None]
"""observe(method, code name, seconds, volume id or '')."""


def _volume_id(request: Any) -> str:
    return str(getattr(request, "volume_id", "") or getattr(request, "name", ""))


class ObservingInterceptor(grpc.ServerInterceptor):
    def __init__(self, observe: Observer, started: Callable[[str], None], finished: Callable[[str], None]) -> None:
        self._observe = observe
        self._started = started
        self._finished = finished

    def intercept_service(self, continuation: Any, handler_call_details: grpc.HandlerCallDetails) -> Any:
        handler = continuation(handler_call_details)
        if handler is None or handler.unary_unary is None:
            return handler
        method = handler_call_details.method.rsplit("/", 1)[-1]
        inner = handler.unary_unary

        def timed(request: Any, context: grpc.ServicerContext) -> Any:
            self._started(method)
            start = time.perf_counter()
            code = "OK"
            try:
                response = inner(request, context)
                return response
            except BaseException:
                status = context.code() if hasattr(context, "code") else None
                code = status.name if isinstance(status, grpc.StatusCode) else "UNKNOWN"
                raise
            finally:
                self._finished(method)
                self._observe(method, code, time.perf_counter() - start, _volume_id(request))

        return grpc.unary_unary_rpc_method_handler(
            timed,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )
