"""The ``infaas`` command: run the services, the demo, and talk to a gateway."""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import ValidationError

from queues.errors import ConfigError, InfaasError

Handler = Callable[[argparse.Namespace], int]


def _settings_error(exc: ValidationError) -> ConfigError:
    problems = "; ".join(
        f"{'.'.join(str(p) for p in e['loc']) or 'value'}: {e['msg']}" for e in exc.errors()
    )
    return ConfigError(f"invalid setting: {problems}")


def cmd_demo(args: argparse.Namespace) -> int:
    from api_gateway.settings import GatewaySettings
    from infaas.client import InfaasClient
    from infaas.demo import ensure_demo_app, run_scenarios
    from infaas.embedded import LocalStack
    from infaas.services import open_services

    gateway = GatewaySettings(
        host=args.host,
        port=args.port if args.serve else 0,
        **({"grpc_port": args.grpc_port} if args.grpc_port is not None else {}),
    )
    gateway.check_demo_exposure()  # before anything is built
    services = open_services()
    print(services.registry.describe_home())
    print(gateway.describe_auth())
    print(gateway.describe_quotas())
    print(f"catalog: {services.catalog!r}")
    print(f"object store: {services.store.describe()}")
    print(f"broker: {services.broker.redacted_url()}")
    demo = ensure_demo_app(services, verbose=args.verbose)
    bootstrap = gateway.bootstrap_admin_key
    with LocalStack(services, gateway=gateway) as stack:
        print(f"gateway at {stack.url} with one CPU worker ({stack.worker_settings.hardware})")
        print(_describe_grpc(stack.grpc_address))
        key = bootstrap.get_secret_value() if bootstrap else None
        with InfaasClient(stack.url, api_key=key) as client:
            run_scenarios(client, demo, queries=args.queries)
        if args.serve:
            print(f"serving on {stack.url} (OpenAPI at {stack.url}/docs); Ctrl-C stops")
            print(
                f"try: curl -s {stack.url}/v1/apps/digits/infer -H 'content-type: "
                "application/json' -d '{\"inputs\": [[0,0,5,13,9,1,0,0,0,0,13,15,10,15,5,"
                "0,0,3,15,2,0,11,8,0,0,4,12,0,0,8,8,0,0,5,8,0,0,9,8,0,0,4,11,0,1,12,7,0,0,"
                '2,14,5,10,12,0,0,0,0,6,13,10,0,0,0]], "latency_ms": 20, '
                '"min_accuracy": 0.97}\''
            )
            try:
                while True:
                    time.sleep(3600)
            except KeyboardInterrupt:
                print("stopping")
    services.close()
    return 0


def cmd_gateway(args: argparse.Namespace) -> int:
    import uvicorn

    from api_gateway.app import create_app
    from api_gateway.serving import uvicorn_config
    from api_gateway.settings import GatewaySettings
    from infaas.gateway_wiring import gateway_services
    from infaas.services import open_services

    services = open_services(*_require_services("gateway"))
    given = (("host", args.host), ("port", args.port), ("grpc_port", args.grpc_port))
    settings = GatewaySettings(**{k: v for k, v in given if v is not None})
    app = create_app(settings, gateway_services(services))
    print(settings.describe_auth())
    print(settings.describe_quotas())
    port = settings.grpc_listen_port
    print(_describe_grpc(f"{settings.host}:{port or 'any free port'}" if port is not None else ""))
    uvicorn.Server(
        uvicorn_config(app, settings.host, settings.port, log_level=args.loglevel.lower())
    ).run()
    return 0


def _describe_grpc(address: str) -> str:
    if not address:
        return "gRPC (Open Inference Protocol): off (INFAAS_GRPC_PORT=off)"
    return f"gRPC (Open Inference Protocol) at {address}"


def _grpc_port(value: str) -> int | str:
    """--grpc-port: a port, 0 for any free one, or off."""
    if value == "off":
        return value
    try:
        return int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a port (or 0, or off)") from None


def _require_services(role: str) -> tuple[Any, Any]:
    """Broker and registry settings of a separate service, which must not be islands."""
    from queues.settings import BrokerSettings
    from registry.settings import RegistrySettings

    broker, registry = BrokerSettings(), RegistrySettings()
    if broker.embedded:
        raise ConfigError(
            f"a separate {role} needs a broker: set INFAAS_BROKER_URL (e.g. "
            "amqp://guest:guest@127.0.0.1:5672//); `infaas demo` runs everything in one "
            "process instead"
        )
    if not registry.state_url:
        raise ConfigError(
            f"a separate {role} needs INFAAS_STATE_URL (redis://...) so that gateways, "
            "workers and the scaler see each other"
        )
    return broker, registry


def cmd_worker(args: argparse.Namespace) -> int:
    from infaas.services import open_services
    from workers.celery_worker import WorkerServices, run_worker
    from workers.settings import WorkerSettings

    overrides: dict[str, Any] = {"hardware": args.hardware}
    if args.cores:
        overrides["cores"] = args.cores
    if args.variants:
        overrides["variants"] = () if args.variants == "none" else args.variants
    if args.replicas:
        overrides["replicas"] = args.replicas
    settings = WorkerSettings(**overrides)
    services = open_services(*_require_services("worker"))
    print(services.registry.describe_home())
    cache = services.registry.home / "cache" / "artifacts"
    run_worker(
        services.broker,
        settings,
        WorkerServices(
            services.broker,
            services.catalog,
            services.store,
            services.live,
            cache,
            services.prices,
            jobs=services.registry.jobs,
        ),
        loglevel=args.loglevel,
    )
    return 0


def cmd_home(args: argparse.Namespace) -> int:
    """Where the embedded default keeps its catalog, store, demo models and cache."""
    from registry.settings import RegistrySettings

    registry = RegistrySettings()
    print(registry.describe_home() if args.explain else registry.home)
    return 0


def read_inputs(path: Path) -> np.ndarray:
    """Rows of inputs from a .npy, .npz (``inputs``) or JSON file (a list of rows, or
    ``{"inputs": [...]}``)."""
    if not path.exists():
        raise ConfigError(f"input file {path} does not exist")
    try:
        if path.suffix == ".npy":
            return np.asarray(np.load(path, allow_pickle=False))
        if path.suffix == ".npz":
            with np.load(path, allow_pickle=False) as data:
                if "inputs" not in data:
                    raise ConfigError(f"{path} has no array named 'inputs' ({list(data)})")
                return np.asarray(data["inputs"])
        data = json.loads(path.read_text())
    except (ValueError, OSError) as exc:
        raise ConfigError(f"cannot read inputs from {path}: {exc}") from exc
    rows = data["inputs"] if isinstance(data, dict) and "inputs" in data else data
    if not isinstance(rows, list):
        raise ConfigError(f"{path} must hold a list of input rows or {{'inputs': [...]}}")
    return np.asarray(rows, dtype=np.float32)


def cmd_query(args: argparse.Namespace) -> int:
    from infaas.client import InfaasClient

    inputs = read_inputs(Path(args.input))
    with InfaasClient(args.url, api_key=args.api_key) as client:
        result = client.infer(
            args.app,
            inputs,
            latency_ms=args.latency_ms,
            min_accuracy=args.min_accuracy,
            max_cost_per_hour=args.max_cost_per_hour,
            explain=args.explain,
        )
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(
        f"variant {result['variant']} ({result['hardware']}) answered in "
        f"{result['elapsed_ms']:.2f} ms (model {result['model_ms']:.3f} ms)"
    )
    print("labels:", result["labels"])
    if args.explain:
        decision = result["decision"]
        print("why:", decision["reason"])
        for candidate in decision["candidates"]:
            print(f"  {candidate['variant']:40} {candidate['reason']}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    from infaas.client import default_url

    parser = argparse.ArgumentParser(
        prog="infaas",
        description="Model-less inference serving: register models under an app, query "
        "with requirements, the system picks and scales the variant.",
    )
    parser.add_argument("--loglevel", default="WARNING", help="log level (default WARNING)")
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser("demo", help="prepare the digits app, serve it, send queries")
    demo.add_argument("--serve", action="store_true", help="keep serving after the demo")
    demo.add_argument("--host", default="127.0.0.1")
    demo.add_argument("--port", type=int, default=8080, help="port with --serve (default 8080)")
    demo.add_argument(
        "--grpc-port",
        type=_grpc_port,
        default=None,
        help="Open Inference Protocol gRPC port with --serve (default --port + 1; off: none)",
    )
    demo.add_argument("--queries", type=int, default=100, help="queries per scenario")
    demo.add_argument(
        "--verbose",
        action="store_true",
        help="show onnxruntime's warnings while the variants are built (hidden by default)",
    )
    demo.set_defaults(handler=cmd_demo)

    home = sub.add_parser(
        "home", help="print the folder of the embedded default ($INFAAS_HOME, or ~/.infaas)"
    )
    home.add_argument("--explain", action="store_true", help="say where the setting came from")
    home.set_defaults(handler=cmd_home)

    gateway = sub.add_parser("gateway", help="run the HTTP gateway")
    gateway.add_argument("--host", default=None, help="default $INFAAS_HOST or 127.0.0.1")
    gateway.add_argument("--port", type=int, default=None, help="default $INFAAS_PORT or 8080")
    gateway.add_argument(
        "--grpc-port",
        type=_grpc_port,
        default=None,
        help="Open Inference Protocol gRPC port: default $INFAAS_GRPC_PORT or --port + 1; "
        "0: any free port; off: none",
    )
    gateway.set_defaults(handler=cmd_gateway)

    worker = sub.add_parser("worker", help="run a worker pinned to CPU cores or a GPU")
    worker.add_argument("--hardware", choices=["cpu", "gpu"], default="cpu")
    worker.add_argument("--cores", default="", help="CPU cores to pin to, e.g. 0,1")
    worker.add_argument(
        "--variants",
        default="",
        help="variants to load at start, comma-separated (default: every ready variant of "
        "this hardware; 'none': start empty and let the scaler load what is needed)",
    )
    worker.add_argument("--replicas", type=int, default=0, help="replicas per variant")
    worker.set_defaults(handler=cmd_worker)

    query = sub.add_parser("query", help="send a model-less query to a gateway")
    query.add_argument("app")
    query.add_argument("--input", required=True, help=".npy, .npz or JSON rows")
    query.add_argument("--latency-ms", type=float, default=None)
    query.add_argument("--min-accuracy", type=float, default=None)
    query.add_argument("--max-cost-per-hour", type=float, default=None)
    query.add_argument("--explain", action="store_true", help="say why this variant")
    query.add_argument("--json", action="store_true", help="print the whole answer")
    query.add_argument("--url", default=default_url(), help="gateway URL ($INFAAS_URL)")
    query.add_argument(
        "--api-key", default=None, help="API key, sent as a bearer token ($INFAAS_API_KEY)"
    )
    query.set_defaults(handler=cmd_query)

    import importlib

    from infaas.commands import MODULES

    for name in MODULES:
        importlib.import_module(name).add_commands(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=args.loglevel.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    handler: Handler = args.handler
    try:
        return handler(args)
    except ValidationError as exc:
        print(f"infaas: {_settings_error(exc).message}", file=sys.stderr)
        return 2
    except InfaasError as exc:
        print(f"infaas: {exc.code}: {exc.message}", file=sys.stderr)
        return 2 if isinstance(exc, ConfigError) else 1


if __name__ == "__main__":
    sys.exit(main())
