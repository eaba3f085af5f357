"""Entry point: parse flags, wire the container, serve until SIGTERM."""

from __future__ import annotations

import logging
import sys
from typing import Sequence

from app import logs
from app.memory import limit_arenas
from app.settings import VERSION, parse

log = logging.getLogger("app")


def main(argv: Sequence[str] | None = None) -> int:
    settings = parse(argv)
    logs.configure(settings.log_level)
    limit_arenas()  # before the first thread

    import prometheus_client

    from app.http import HealthServer
    from app.server import DriverServer, EndpointInUse, build_container, install_signal_handlers
    from domain.errors import DomainError

    prometheus_client.disable_created_metrics()
    container = build_container(settings)
    try:
        container.defaults()
    except DomainError as err:
        log.error("invalid configuration: %s", err)
        return 2
    telemetry = container.telemetry()
    telemetry.build_info.labels(VERSION, settings.driver_name, settings.mode).set(1)
    counts_usage = settings.serves_node and settings.volume_usage_interval > 0
    telemetry.watch(
        share_mounts=container.storage().shares_held if settings.serves_controller else None,
        published=container.publications().count if settings.serves_node else None,
        filled=container.usage_meter().filled if counts_usage else None,
    )
    server = DriverServer(settings, container)
    install_signal_handlers(server)
    health = None
    if settings.metrics_address:
        # Up before the socket, so liveness answers at once; /readyz says "not serving" until the socket is.
        try:
            health = HealthServer(settings.metrics_address, telemetry.registry, server.not_ready_because)
        except OSError as err:
            log.error("cannot serve metrics on %s: %s", settings.metrics_address, err)
            return 1
        health.start()
    try:
        server.start()
    except EndpointInUse as err:
        log.error("%s", err)
        if health is not None:
            health.stop()
        return 1
    server.wait_and_drain()
    if health is not None:
        health.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
