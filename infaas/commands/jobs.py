"""``infaas jobs submit|status|wait|cancel|list``: batch jobs through a gateway."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from queues.errors import ConfigError

FINISHED = ("succeeded", "failed", "cancelled")


def object_url(location: str, key: str) -> str:
    """``s3://BUCKET/KEY`` of an output key (keys are relative to the location's bucket)."""
    bucket = location.removeprefix("s3://").partition("/")[0]
    return f"s3://{bucket}/{key}" if location.startswith("s3://") else key


def add_commands(sub: Any) -> None:
    from infaas.client import default_url

    jobs = sub.add_parser("jobs", help="batch jobs: submit, follow, cancel, list")
    jobs_sub = jobs.add_subparsers(dest="jobs_command", required=True)

    def with_url(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
        parser.add_argument("--url", default=default_url(), help="gateway URL ($INFAAS_URL)")
        parser.add_argument(
            "--api-key", default=None, help="API key, sent as a bearer token ($INFAAS_API_KEY)"
        )
        return parser

    submit = with_url(jobs_sub.add_parser("submit", help="submit a batch job"))
    submit.add_argument("app")
    source = submit.add_mutually_exclusive_group(required=True)
    source.add_argument("--input", default=None, help="s3://BUCKET/PREFIX of .npz inputs")
    source.add_argument("--upload", default=None, help="a local .npz (array 'inputs') to upload")
    submit.add_argument("--output", required=True, help="s3://BUCKET/PREFIX for the outputs")
    submit.add_argument("--min-accuracy", type=float, required=True, help="accuracy floor")
    submit.add_argument("--deadline", default=None, help="RFC 3339 with a time zone")
    submit.add_argument("--max-cost-usd", type=float, default=None, help="for the whole job")
    submit.add_argument("--chunk-items", type=int, default=None, help="items per chunk")
    submit.add_argument("--idempotency-key", default=None, help="retries give the same job")
    submit.add_argument("--wait", action="store_true", help="then wait with a progress bar")
    submit.set_defaults(handler=cmd_submit)

    status = with_url(jobs_sub.add_parser("status", help="a job's status and progress"))
    status.add_argument("job_id")
    status.add_argument("--json", action="store_true", help="print the whole answer")
    status.set_defaults(handler=cmd_status)

    wait = with_url(jobs_sub.add_parser("wait", help="wait for a job, with a progress bar"))
    wait.add_argument("job_id")
    wait.add_argument("--timeout-s", type=float, default=None, help="give up after (default never)")
    wait.set_defaults(handler=cmd_wait)

    cancel = with_url(jobs_sub.add_parser("cancel", help="cancel a queued or running job"))
    cancel.add_argument("job_id")
    cancel.set_defaults(handler=cmd_cancel)

    listing = with_url(jobs_sub.add_parser("list", help="jobs, newest first"))
    listing.add_argument("--app", default=None)
    listing.add_argument("--status", default=None, choices=["queued", "running", *FINISHED])
    listing.add_argument("--limit", type=int, default=20)
    listing.set_defaults(handler=cmd_list)


class _ProgressBar:
    """A tqdm bar over a job's items, fed by its polled status."""

    def __init__(self) -> None:
        from tqdm import tqdm

        self._bar = tqdm(total=0, unit="item", file=sys.stderr, dynamic_ncols=True)

    def __call__(self, status: dict[str, Any]) -> None:
        progress = status["progress"]
        if self._bar.total != progress["items_total"]:
            self._bar.total = progress["items_total"]
        self._bar.n = progress["items_done"]
        self._bar.set_description_str(
            f"{status['status']} {progress['chunks_done']}/{progress['chunks_total']} chunks"
        )
        self._bar.set_postfix_str(f"${status['cost_usd']:.6f}")
        self._bar.refresh()

    def close(self) -> None:
        self._bar.close()


def _describe(status: dict[str, Any]) -> None:
    progress = status["progress"]
    print(
        f"job {status['job_id']} ({status['app']}): {status['status']}, "
        f"{progress['items_done']}/{progress['items_total']} items in "
        f"{progress['chunks_done']}/{progress['chunks_total']} chunks, variant "
        f"{status['variant']}, cost so far ${status['cost_usd']:.6f}"
    )
    if status.get("deadline"):
        missed = " (missed)" if status.get("deadline_missed") else ""
        print(f"deadline {status['deadline']}{missed}")
    for error in status.get("errors", []):
        where = "job" if error["chunk"] is None else f"chunk {error['chunk']}"
        print(f"{where}: {error['error']}")
    bucket = object_url(status["output"], "")
    if status.get("manifest"):
        print(f"manifest: {bucket}{status['manifest']}")
    elif status["status"] in ("failed", "cancelled") and status.get("outputs"):
        print(f"partial outputs ({len(status['outputs'])}) under {status['output']}:")
        for key in status["outputs"]:
            print(f"  {bucket}{key}")


def _wait(client: Any, job_id: str, timeout_s: float | None) -> int:
    bar = _ProgressBar()
    try:
        final = client.wait_for_job(job_id, timeout_s=timeout_s, on_progress=bar)
    finally:
        bar.close()
    _describe(final)
    return 0 if final["status"] == "succeeded" else 1


def cmd_submit(args: argparse.Namespace) -> int:
    from infaas.client import InfaasClient

    if args.upload is not None and not Path(args.upload).is_file():
        raise ConfigError(f"{args.upload} does not exist or is not a file")
    with InfaasClient(args.url, api_key=args.api_key) as client:
        answer = client.submit_job(
            args.app,
            output=args.output,
            min_accuracy=args.min_accuracy,
            input_url=args.input,
            upload=args.upload,
            deadline=args.deadline,
            max_cost_usd=args.max_cost_usd,
            chunk_items=args.chunk_items,
            idempotency_key=args.idempotency_key,
        )
        estimate = answer["estimate"]
        again = " (the same job as before)" if answer["replayed"] else ""
        print(
            f"job {answer['job_id']}{again}: {answer['items_total']} items in "
            f"{answer['chunks_total']} chunks on {answer['variant']}, about "
            f"${estimate['cost_usd']:.6f} and {estimate['duration_s']:.1f} s"
        )
        if not args.wait:
            print(f"follow it with: infaas jobs wait {answer['job_id']}")
            return 0
        return _wait(client, answer["job_id"], None)


def cmd_status(args: argparse.Namespace) -> int:
    from infaas.client import InfaasClient

    with InfaasClient(args.url, api_key=args.api_key) as client:
        status = client.job(args.job_id)
    if args.json:
        print(json.dumps(status, indent=2))
    else:
        _describe(status)
    return 0


def cmd_wait(args: argparse.Namespace) -> int:
    from infaas.client import InfaasClient

    with InfaasClient(args.url, api_key=args.api_key) as client:
        return _wait(client, args.job_id, args.timeout_s)


def cmd_cancel(args: argparse.Namespace) -> int:
    from infaas.client import InfaasClient

    with InfaasClient(args.url, api_key=args.api_key) as client:
        status = client.cancel_job(args.job_id)
    _describe(status)
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    from infaas.client import InfaasClient

    with InfaasClient(args.url, api_key=args.api_key) as client:
        jobs = client.jobs(app=args.app, status=args.status, limit=args.limit)
    print(f"{'job':32} {'app':16} {'status':10} {'items':>15} {'cost $':>10} created")
    for job in jobs:
        progress = job["progress"]
        items = f"{progress['items_done']}/{progress['items_total']}"
        print(
            f"{job['job_id']:32} {job['app']:16} {job['status']:10} {items:>15} "
            f"{job['cost_usd']:10.6f} {job['created_at']}"
        )
    if not jobs:
        print("(no jobs)")
    return 0
