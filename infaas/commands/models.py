"""``infaas register``, ``infaas models`` and ``infaas delete-model``: registering trained
models with a gateway and looking at what their variants measured."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from queues.errors import ConfigError


def add_commands(sub: Any) -> None:
    from infaas.client import default_url

    register = sub.add_parser(
        "register",
        help="register a trained model (ONNX or torch.export .pt2) under an app; the app is "
        "created from the model's input when it does not exist yet",
    )
    register.add_argument("app")
    register.add_argument("model_file", help="the model: .onnx, or a torch.export.save .pt2")
    register.add_argument("--validation", required=True, help=".npz with inputs and labels")
    register.add_argument("--id", default=None, help="model id (default: the file name)")
    register.add_argument("--metadata", default=None, help="a JSON object kept with the model")
    register.add_argument("--hardware", default=None, help="cpu,gpu (default: live workers')")
    register.add_argument("--output", default=None, help="the output to serve")
    register.add_argument("--num-classes", type=int, default=None, help="for a new app")
    register.add_argument("--description", default="", help="for a new app")
    register.add_argument(
        "--budget-s", type=float, default=None, help="profiling time per batch size (0.4)"
    )
    register.add_argument("--batch-sizes", default=None, help="batch sizes to profile")
    register.add_argument("--no-wait", action="store_true", help="return once uploaded")
    register.add_argument("--timeout-s", type=float, default=1800.0)
    register.add_argument("--url", default=default_url(), help="gateway URL ($INFAAS_URL)")
    register.add_argument(
        "--api-key", default=None, help="API key, sent as a bearer token ($INFAAS_API_KEY)"
    )
    register.set_defaults(handler=cmd_register)

    models = sub.add_parser("models", help="an app's models, variants and profiles")
    models.add_argument("app")
    models.add_argument("--json", action="store_true", help="print the whole answer")
    models.add_argument("--url", default=default_url(), help="gateway URL ($INFAAS_URL)")
    models.add_argument(
        "--api-key", default=None, help="API key, sent as a bearer token ($INFAAS_API_KEY)"
    )
    models.set_defaults(handler=cmd_models)

    delete = sub.add_parser(
        "delete-model", help="delete a model and its variants once no query uses them"
    )
    delete.add_argument("app")
    delete.add_argument("model")
    delete.add_argument("--url", default=default_url(), help="gateway URL ($INFAAS_URL)")
    delete.add_argument(
        "--api-key", default=None, help="API key, sent as a bearer token ($INFAAS_API_KEY)"
    )
    delete.set_defaults(handler=cmd_delete_model)


def _metadata(raw: str | None) -> dict[str, Any] | None:
    if raw is None:
        return None
    try:
        value = json.loads(raw)
    except ValueError as exc:
        raise ConfigError(f"--metadata is not JSON ({exc}); give a JSON object") from exc
    if not isinstance(value, dict):
        raise ConfigError('--metadata must be a JSON object, e.g. \'{"source": "..."}\'')
    return value


def _print_created_app(view: dict[str, Any]) -> None:
    signature = view["input"]
    num_classes = view["num_classes"]
    print(
        f"created app {view['app']}: input {signature['name']!r} {signature['dtype']} "
        f"{signature['shape']}" + (f", {num_classes} classes" if num_classes else "")
    )


class _ProgressBar:
    """A tqdm bar over the variants of a registration, fed by its polled progress."""

    def __init__(self) -> None:
        from tqdm import tqdm

        # disable=None: a bar on a terminal, nothing when the output is a file or a pipe
        self._bar = tqdm(total=0, unit="variant", file=sys.stderr, dynamic_ncols=True, disable=None)
        self._seen: dict[str, str] = {}

    def __call__(self, progress: dict[str, Any]) -> None:
        variants = progress["variants"]
        done = sum(1 for v in variants if v["status"] in ("ready", "failed"))
        if self._bar.total != len(variants):
            self._bar.total = len(variants)
        for variant in variants:
            if self._seen.get(variant["id"]) != variant["status"]:
                self._seen[variant["id"]] = variant["status"]
                self._bar.set_description_str(f"{variant['id']}: {variant['status']}")
        self._bar.n = done
        self._bar.refresh()

    def close(self) -> None:
        self._bar.close()


def cmd_register(args: argparse.Namespace) -> int:
    from infaas.client import InfaasClient

    model_file, validation = Path(args.model_file), Path(args.validation)
    for path in (model_file, validation):
        if not path.is_file():
            raise ConfigError(f"{path} does not exist or is not a file")
    batch_sizes = None
    if args.batch_sizes:
        try:
            batch_sizes = [int(b) for b in args.batch_sizes.split(",")]
        except ValueError as exc:
            raise ConfigError(f"--batch-sizes must be integers like 1,4,8 ({exc})") from exc
    with InfaasClient(args.url, api_key=args.api_key) as client:
        # a missing app is made from the model's input by the gateway, in the same step
        # as the model: a refused registration leaves no empty app behind
        answer = client.register_model(
            args.app,
            model_file,
            validation,
            model_id=args.id,
            metadata=_metadata(args.metadata),
            hardware=args.hardware.split(",") if args.hardware else None,
            budget_s_per_batch=args.budget_s,
            batch_sizes=batch_sizes,
            output=args.output,
            create_app=True,
            num_classes=args.num_classes,
            description=args.description,
        )
        if answer["app_created"]:
            _print_created_app(client.app(args.app))
        registration = answer["registration"]
        hardware = ", ".join(answer["hardware"])
        print(f"registering {answer['model']} in {args.app} on {hardware}: {registration}")
        if args.no_wait:
            print(f"follow it with: GET {args.url}/v1/registrations/{registration}")
            return 0
        bar = _ProgressBar()
        try:
            final = client.wait_for_registration(
                registration, timeout_s=args.timeout_s, on_progress=bar
            )
        finally:
            bar.close()
        for hw, task in final["hardware"].items():
            for note in task["notes"]:
                print(f"{hw}: {note}")
            if task["error"]:
                print(f"{hw}: failed: {task['error']}")
        print_variants(client.app(args.app), model=answer["model"])
    return 0 if final["status"] == "ready" else 1


def _ms(latency: dict[str, float], batch: int) -> str:
    value = latency.get(str(batch))
    return f"{value:.3f}" if value is not None else "-"


def _num(value: float | None, fmt: str) -> str:
    return format(value, fmt) if value is not None else "-"


def print_variants(view: dict[str, Any], *, model: str | None = None) -> None:
    """The app's variants (of one model, if given) with their profiles, one row each."""
    rows = [v for v in view["variants"] if model is None or v["model"] == model]
    print(
        f"{'variant':46} {'status':9} {'acc.':>6} {'p50@1':>8} {'p50@8':>8} {'p50@32':>8} "
        f"{'batch':>5} {'MB':>7} {'load ms':>8} {'$/h':>7} {'state':9}"
    )
    print("-" * 134)
    for v in rows:
        latency = v["latency_ms"]
        print(
            f"{v['id']:46} {v['status']:9} {_num(v['accuracy'], '6.3f'):>6} "
            f"{_ms(latency, 1):>8} {_ms(latency, 8):>8} {_ms(latency, 32):>8} "
            f"{_num(v['max_batch'], 'd'):>5} {_num(v['memory_mb'], '7.2f'):>7} "
            f"{_num(v['load_ms'], '8.1f'):>8} {v['cost_per_hour']:7.4f} {v['state']:9}"
        )
        if v["error"]:
            print(f"    {v['error']}")
    if not rows:
        print("(no variants yet)")


def cmd_models(args: argparse.Namespace) -> int:
    from infaas.client import InfaasClient

    with InfaasClient(args.url, api_key=args.api_key) as client:
        view = client.app(args.app)
    if args.json:
        print(json.dumps(view, indent=2))
        return 0
    models = ", ".join(f"{m['id']} ({m['status']})" for m in view["models"]) or "none"
    print(f"app {view['app']}: {view['task']}, input {view['input']}; models: {models}")
    print_variants(view)
    return 0


def cmd_delete_model(args: argparse.Namespace) -> int:
    from infaas.client import InfaasClient

    with InfaasClient(args.url, api_key=args.api_key) as client:
        answer = client.delete_model(args.app, args.model)
    print(
        f"deleted {answer['deleted']} and {len(answer['variants'])} variant(s)"
        + (f"; unloaded {', '.join(answer['unloaded'])}" if answer["unloaded"] else "")
    )
    return 0
