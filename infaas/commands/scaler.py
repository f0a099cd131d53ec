"""``infaas scaler``: the autoscaler's control loop."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import threading
from typing import Any

log = logging.getLogger(__name__)


def cmd_scaler(args: argparse.Namespace) -> int:
    from prometheus_client import start_http_server

    from infaas.cli import _require_services
    from infaas.services import open_services
    from queues.celery_app import create_celery_app
    from queues.depth import QueueProbe
    from scaler.actuators import ActuatorSettings, make_actuator
    from scaler.loop import ScalerLoop
    from scaler.settings import ScalerSettings, check_price_table
    from workers.celery_worker import broker_connector

    overrides: dict[str, Any] = {}
    if args.planner:
        overrides["planner"] = args.planner
    settings = ScalerSettings(**overrides)  # bad settings are refused here, with a message
    actuator_settings = ActuatorSettings(actuator=args.actuator)
    services = open_services(*_require_services("scaler"))
    check_price_table(services.prices, settings)
    loop = ScalerLoop(
        settings=settings,
        broker=services.broker,
        catalog=services.catalog,
        live=services.live,
        prices=services.prices,
        celery=create_celery_app(services.broker),
        actuator=make_actuator(actuator_settings, env=dict(os.environ)),
        probe=QueueProbe(broker_connector(services.broker)),
        policy=args.policy,
    )
    if args.metrics_port is not None:
        start_http_server(args.metrics_port, registry=loop.metrics.registry)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    log.info(
        "scaler running: policy %s, planner %s, actuator %s, a tick every %.1f s",
        args.policy, settings.planner, args.actuator, settings.tick_interval_s,
    )  # fmt: skip
    try:
        loop.run(stop)
    finally:
        loop.close()
        services.close()
    return 0


def add_commands(sub: Any) -> None:
    scaler = sub.add_parser("scaler", help="run the autoscaler (model and worker level)")
    scaler.add_argument("--actuator", choices=["local", "compose", "kubernetes"], default="local")
    scaler.add_argument("--policy", choices=["infaas", "replicate-only"], default="infaas")
    scaler.add_argument("--planner", choices=["ilp", "greedy"], default=None,
                        help="default $INFAAS_SCALER_PLANNER or ilp")  # fmt: skip
    scaler.add_argument("--metrics-port", type=int, default=None, help="serve /metrics here")
    scaler.set_defaults(handler=cmd_scaler)
