"""A server interceptor: times every unary CSI call, logs it as one structured line, reports it to metrics."""

from __future__ import annotations

import logging
import time
import uuid
from typing import Any, Protocol

import grpc

from adapters.grpc.redact import redacted

log = logging.getLogger("csi")

# Called often by sidecars; logged at debug when they succeed.
_QUIET = frozenset(
    {"Probe", "GetPluginInfo", "GetPluginCapabilities", "ControllerGetCapabilities", "NodeGetCapabilities", "NodeGetInfo"}
)


class CallObserver(Protocol):
    def call_started(self, method: str) -> None: ...
    def call_finished(self, method: str, code: str, seconds: float) -> None: ...


def _volume_id(request: Any, response: Any) -> str:
    """The volume a call is about; for CreateVolume, the one it made, so a volume can be traced from its first line."""
    made = getattr(getattr(response, "volume", None), "volume_id", "")
    return str(getattr(request, "volume_id", "") or made or getattr(request, "source_volume_id", "") or "")


def _snapshot_id(request: Any, response: Any) -> str:
    return str(getattr(request, "snapshot_id", "") or getattr(getattr(response, "snapshot", None), "snapshot_id", "") or "")


def _request_id(context: grpc.ServicerContext) -> str:
    for key, value in context.invocation_metadata() or ():
        if key in ("x-request-id", "request-id") and isinstance(value, str) and value:
            return value[:64]
    return uuid.uuid4().hex[:16]


class ObservingInterceptor(grpc.ServerInterceptor):
    def __init__(self, observer: CallObserver) -> None:
        self._observer = observer

    def intercept_service(self, continuation: Any, handler_call_details: grpc.HandlerCallDetails) -> Any:
        handler = continuation(handler_call_details)
        if handler is None or handler.unary_unary is None:
            return handler
        method = handler_call_details.method.rsplit("/", 1)[-1]
        inner = handler.unary_unary
        observer = self._observer

        def observed(request: Any, context: grpc.ServicerContext) -> Any:
            # Only a logged call needs its request id: a call that logs nothing (OK, below the log level) makes none.
            request_id = ""
            observer.call_started(method)
            started = time.perf_counter()
            code = "OK"
            detail = ""
            response = None
            try:
                if log.isEnabledFor(logging.DEBUG):
                    request_id = _request_id(context)
                    log.debug("%s request", method, extra={"method": method, "request_id": request_id, "request": redacted(request)})
                response = inner(request, context)
                return response
            except NotImplementedError:
                # The generated servicer's answer for an RPC this driver does not offer: not a fault of the driver,
                # so answered here, where gRPC would log it as an application error with its traceback.
                code, detail = "UNIMPLEMENTED", f"{method} is not offered by this driver"
                context.abort(grpc.StatusCode.UNIMPLEMENTED, detail)
            except BaseException:
                status = context.code()
                code = status.name if isinstance(status, grpc.StatusCode) else "UNKNOWN"
                detail = context.details() or ""
                raise
            finally:
                seconds = time.perf_counter() - started
                observer.call_finished(method, code, seconds)
                level = logging.DEBUG if code == "OK" and method in _QUIET else logging.INFO if code == "OK" else logging.WARNING
                if log.isEnabledFor(level):
                    fields = {
                        "method": method,
                        "volume_id": _volume_id(request, response),
                        "duration_seconds": round(seconds, 6),
                        "code": code,
                        "request_id": request_id or _request_id(context),
                    }
                    name = getattr(request, "name", "")
                    if isinstance(name, str) and name:
                        fields["volume_name"] = name
                    snapshot_id = _snapshot_id(request, response)
                    if snapshot_id:
                        fields["snapshot_id"] = snapshot_id
                    if detail:
                        fields["error"] = detail if isinstance(detail, str) else detail.decode(errors="replace")
                    try:
                        log.log(level, "%s %s", method, code, extra=fields)
                    except Exception:  # noqa: BLE001 - a log line must never fail the call
                        log.exception("could not log the %s call", method)

        return grpc.unary_unary_rpc_method_handler(
            observed,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )
