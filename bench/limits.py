"""Hostile inputs against a running gateway: how fast they are refused, and what they cost.

Three requests an outsider sent (issue 20), each to an embedded gateway (LocalStack,
no worker) running in a child process, so its memory is measured alone:

- ``json_100mb``: a 100 MB JSON body of 25 million rows to ``/v1/apps/digits/infer``,
  with its Content-Length (``json_100mb_streamed``: the same, chunked, no length);
- ``npz_bomb``: a registration whose ``val.npz`` (about 1 MB) unpacks to 1 GiB;
- ``pt2_bomb``: a registration whose ``.pt2`` (about 1 MB) holds a 1 GiB weight.

For each: the time from the first byte sent to the refusal's answer, the gateway's
extra RSS (peak while the request is handled, over its RSS just before), and the latency
of ``/healthz`` polled concurrently from another thread meanwhile, against the same
poll with no attack (the baseline, measured in the same run). Targets: refused in under
1 s, under 100 MB extra, ``/healthz`` under 50 ms.

    python -m bench.limits

Writes bench/results/limits.json.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import numpy as np
import psutil

RESULTS = Path(__file__).resolve().parent / "results" / "limits.json"
GIB = 1024**3
MB = 1024 * 1024
TARGETS = {"refused_s": 1.0, "extra_rss_mb": 100.0, "healthz_ms": 50.0}
# what the outsider measured before the limits (issue 20)
BEFORE = {
    "json_100mb": {"refused_s": 15.6, "extra_rss_mb": 2850.0, "healthz_ms": 7800.0},
    "npz_bomb": {"refused_s": 8.3, "extra_rss_mb": 1340.0},
    "pt2_bomb": {"extra_rss_mb": 2100.0},
}
FEATURES = 64


# ----------------------------------------------------------------------------- payloads


def json_body(rows: int = 25_000_000) -> bytes:
    return b'{"inputs": [' + b"[0]," * (rows - 1) + b"[0]]}"


def _deflated_zeros(archive: zipfile.ZipFile, name: str, size: int, header: bytes = b"") -> None:
    with archive.open(name, "w", force_zip64=True) as member:
        member.write(header)
        block = bytes(4 * MB)
        left = size - len(header)
        while left > 0:
            member.write(block[: min(left, len(block))])
            left -= len(block)


def npz_bomb(unpacked: int = GIB) -> bytes:
    """A validation set whose ``inputs`` (float32, [n, 64]) unpacks to ``unpacked`` bytes."""
    buffer = io.BytesIO()
    rows = unpacked // (FEATURES * 4)
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        header, {"descr": "<f4", "fortran_order": False, "shape": (rows, FEATURES)}
    )
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        _deflated_zeros(archive, "inputs.npy", len(header.getvalue()) + rows * FEATURES * 4,
                        header.getvalue())  # fmt: skip
        with archive.open("labels.npy", "w") as member:
            np.lib.format.write_array(member, np.zeros(rows % 1000 + 1, np.int64))
    return buffer.getvalue()


def pt2_bomb(unpacked: int = GIB) -> bytes:
    """A torch.export-shaped archive with one weight of ``unpacked`` zero bytes."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("model/archive_format", b"pt2")
        archive.writestr("model/archive_version", b"0")
        archive.writestr("model/models/model.json", b"{}")
        archive.writestr("model/data/weights/model_weights_config.json", b'{"config": {}}')
        _deflated_zeros(archive, "model/data/weights/weight_0", unpacked)
    return buffer.getvalue()


def small_validation() -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, inputs=np.zeros((4, FEATURES), np.float32), labels=np.arange(4) % 2)
    return buffer.getvalue()


def identity_onnx() -> bytes:
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", FEATURES])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", FEATURES])
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "g", [x], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    return bytes(model.SerializeToString())


# ---------------------------------------------------------------------------- requests


def post_raw(
    url: str, path: str, body: Iterator[bytes], headers: dict[str, str]
) -> tuple[int, str]:
    """POST over a plain socket, the body sent from another thread: the gateway may
    answer (and close) before the body is all sent, which an HTTP client reports as
    an error instead of the answer. Returns the status and the error code."""
    parts = urlsplit(url)
    sock = socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 80))
    head = "".join(f"{k}: {v}\r\n" for k, v in {"host": "gw", **headers}.items())
    sock.sendall(f"POST {path} HTTP/1.1\r\n{head}\r\n".encode())

    def send() -> None:
        try:
            for chunk in body:
                sock.sendall(chunk)
        except OSError:
            pass  # refused and closed: what is measured

    sender = threading.Thread(target=send, daemon=True)
    sender.start()
    answer = b""
    while not _complete(answer):
        data = sock.recv(65536)
        if not data:
            break
        answer += data
    sock.close()
    sender.join(30)
    if not answer.startswith(b"HTTP/"):
        return 0, ""
    return int(answer.split(b" ", 2)[1]), _code(answer.split(b"\r\n\r\n", 1)[1])


def _complete(answer: bytes) -> bool:
    """Whether ``answer`` holds a whole response (headers and Content-Length bytes)."""
    head, sep, body = answer.partition(b"\r\n\r\n")
    if not sep:
        return False
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return len(body) >= int(value)
    return False


def _code(body: bytes) -> str:
    try:
        return str(json.loads(body)["error"]["code"])
    except (ValueError, KeyError, TypeError):
        return ""


def _pieces(data: bytes, size: int = MB) -> Iterator[bytes]:
    view = memoryview(data)
    for start in range(0, len(data), size):
        yield bytes(view[start : start + size])


def _chunked(data: bytes) -> Iterator[bytes]:
    for piece in _pieces(data):
        yield f"{len(piece):x}\r\n".encode() + piece + b"\r\n"
    yield b"0\r\n\r\n"


# ------------------------------------------------------------------------- measurement


@dataclass
class Watch:
    """Samples the gateway's RSS and polls /healthz until stopped."""

    url: str
    pid: int
    rss: list[int] = field(default_factory=list)
    healthz_ms: list[float] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)

    def __enter__(self) -> Watch:
        self._threads = [
            threading.Thread(target=self._sample, daemon=True),
            threading.Thread(target=self._poll, daemon=True),
        ]
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(30)

    def _sample(self) -> None:
        process = psutil.Process(self.pid)
        while not self._stop.is_set():
            self.rss.append(process.memory_info().rss)
            time.sleep(0.002)

    def _poll(self) -> None:
        with httpx.Client(base_url=self.url, timeout=30) as client:
            while not self._stop.is_set():
                started = time.perf_counter()
                client.get("/healthz").raise_for_status()
                self.healthz_ms.append((time.perf_counter() - started) * 1000)
                time.sleep(0.005)


def measure(
    url: str, pid: int, attack: Callable[[], tuple[int, str]], settle_s: float = 0.3
) -> dict[str, Any]:
    before = psutil.Process(pid).memory_info().rss
    with Watch(url, pid) as watch:
        time.sleep(0.1)
        polls_before = len(watch.healthz_ms)
        started = time.perf_counter()
        status, code = attack()
        refused_s = time.perf_counter() - started
        time.sleep(settle_s)
    during = watch.healthz_ms[polls_before:] or [float("nan")]
    return {
        "status": status,
        "code": code,
        "refused_s": round(refused_s, 4),
        "extra_rss_mb": round((max(watch.rss) - before) / MB, 1),
        "healthz_ms_max": round(max(during), 2),
        "healthz_ms_p50": round(statistics.median(during), 2),
        "healthz_polls": len(during),
    }


def registration(
    url: str, model: tuple[str, bytes], validation: bytes
) -> Callable[[], tuple[int, str]]:
    def attack() -> tuple[int, str]:
        files = {
            "model": (model[0], model[1], "application/octet-stream"),
            "validation": ("val.npz", validation, "application/octet-stream"),
        }
        response = httpx.post(f"{url}/v1/apps/digits/models", files=files, timeout=120)
        return response.status_code, _code(response.content)

    return attack


# ------------------------------------------------------------------------------- runs


def serve() -> None:
    """The gateway under test (child process): prints its URL, runs until stdin closes."""
    from infaas.embedded import LocalStack
    from infaas.services import open_services
    from queues.settings import BrokerSettings
    from registry.settings import RegistrySettings

    with tempfile.TemporaryDirectory(prefix="infaas-bench-limits-") as home:
        broker = BrokerSettings(broker_url=None, queue_prefix="bench")
        services = open_services(broker, RegistrySettings(home=Path(home)))
        with LocalStack(services, with_worker=False) as stack:
            print(stack.url, flush=True)
            sys.stdin.read()


def run() -> dict[str, Any]:
    child = subprocess.Popen(
        [sys.executable, "-m", "bench.limits", "--serve"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "INFAAS_AUTH": "off"},
    )
    try:
        assert child.stdout is not None
        url = child.stdout.readline().strip()
        app = {
            "id": "digits",
            "task": "classification",
            "input": {"name": "x", "dtype": "float32", "shape": [-1, FEATURES]},
        }
        httpx.post(f"{url}/v1/apps", json=app, timeout=30).raise_for_status()
        body = json_body()
        payloads = {"npz": npz_bomb(), "pt2": pt2_bomb(), "onnx": identity_onnx()}
        json_headers = {"content-type": "application/json"}
        # warm-up, not measured: the first upload imports onnx (a second of held GIL)
        registration(url, ("m.onnx", payloads["onnx"]), b"not an npz")()
        attacks: dict[str, Callable[[], tuple[int, str]]] = {
            "baseline": lambda: (httpx.get(f"{url}/healthz").status_code, ""),
            "json_100mb": lambda: post_raw(
                url,
                "/v1/apps/digits/infer",
                _pieces(body),
                {**json_headers, "content-length": str(len(body))},
            ),
            "json_100mb_streamed": lambda: post_raw(
                url,
                "/v1/apps/digits/infer",
                _chunked(body),
                {**json_headers, "transfer-encoding": "chunked"},
            ),
            "npz_bomb": registration(url, ("m.onnx", payloads["onnx"]), payloads["npz"]),
            "pt2_bomb": registration(url, ("m.pt2", payloads["pt2"]), small_validation()),
        }
        results = {name: measure(url, child.pid, attack) for name, attack in attacks.items()}
        apps = httpx.get(f"{url}/v1/apps", timeout=30).json()
    finally:
        if child.stdin is not None:
            child.stdin.close()
        child.wait(60)
    baseline_ms = results["baseline"]["healthz_ms_max"]
    for name, figures in results.items():
        if name == "baseline":
            continue
        figures["healthz_vs_baseline"] = round(figures["healthz_ms_max"] / baseline_ms, 2)
        figures["meets_targets"] = (
            figures["refused_s"] < TARGETS["refused_s"]
            and figures["extra_rss_mb"] < TARGETS["extra_rss_mb"]
            and figures["healthz_ms_max"] < TARGETS["healthz_ms"]
        )
    return {
        "benchmark": "limits",
        "command": "python -m bench.limits",
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count()},
        "payload_bytes": {
            "json_100mb": len(body),
            "npz_bomb": len(payloads["npz"]),
            "pt2_bomb": len(payloads["pt2"]),
        },
        "targets": TARGETS,
        "before_issue_20": BEFORE,
        "results": results,
        "models_registered": sum(len(a.get("models", [])) for a in apps.get("apps", [])),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve()
        return
    report = run()
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(report, indent=2) + "\n")
    for name, figures in report["results"].items():
        print(f"{name:22s} {json.dumps(figures)}")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
