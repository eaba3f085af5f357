"""Entry point: parse flags, wire the container, serve until SIGTERM."""

from __future__ import annotations

import logging
import sys
from typing import Sequence

from app import logs
from app.settings import VERSION, parse

log = logging.getLogger("app")


def main(argv: Sequence[str] | None = None) -> int:
    settings = parse(argv)
    logs.configure(settings.log_level)

    from prometheus_client import start_http_server

    from app.metrics import Metrics
    from app.server import DriverServer, EndpointInUse, build_container, install_signal_handlers
    from domain.errors import DomainError

    container = build_container(settings)
    try:
        container.defaults()
    except DomainError as err:
        log.error("invalid configuration: %s", err)
        return 2
    metrics = Metrics()
    metrics.build_info.labels(VERSION, settings.driver_name, settings.mode).set(1)
    server = DriverServer(settings, container, metrics)
    install_signal_handlers(server)
    try:
        server.start()
    except EndpointInUse as err:
        log.error("%s", err)
        return 1
    if settings.metrics_address:
        host, _, port = settings.metrics_address.rpartition(":")
        start_http_server(int(port), addr=host or "0.0.0.0", registry=metrics.registry)
    server.wait_and_drain()
    return 0


if __name__ == "__main__":
    sys.exit(main())
