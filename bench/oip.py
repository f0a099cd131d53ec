"""The Open Inference Protocol's routes under load, beside ``/v1`` (bench/pipeline.py).

Three ways to send the same batch-1 model-less query to the same app with the same
needs: v2 REST with JSON tensors, v2 REST with the binary tensor extension, and gRPC
``ModelInfer`` with ``raw_input_contents``. REST goes through the lean HTTP/1.1 load
generator (bench/loadgen.py), gRPC through the lean HTTP/2 one (bench/grpc_load.py), so
that on two cores the client takes as little as it can from the server it measures; gRPC
is also measured through a real client, ``grpc.aio`` (route ``grpc_aio``: the request
serialized once, the answer left as bytes, one channel per client), which costs this
machine about three times the lean client's CPU per call.

The routes are compared in one run, interleaved (:func:`interleaved`): ``/v1`` and the
protocol's routes take turns in short rounds (all routes at 1 client, then all at
16 clients; the order rotated each round), several rounds, so that load from outside
the benchmark, which comes and goes on a shared machine, falls on every route alike.
A route's throughput is the median of its rounds; its ratio to ``/v1`` is the median of
the per-round ratios (each against ``/v1`` measured in the same round, seconds apart);
latency percentiles pool every round's requests.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import statistics
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any

import grpc
import numpy as np

from api_gateway.grpc_server import SERVICE
from api_gateway.oip_grpc import grpc_service_pb2 as pb
from bench import grpc_load, procstat
from bench.loadgen import LoadResult, Send, closed_loop, run_closed_loop

BINARY_HEADER = "Inference-Header-Content-Length"
GRPC_INFER = f"/{SERVICE}/ModelInfer"


def rest_json_body(sample: np.ndarray, input_name: str, needs: dict[str, float]) -> bytes:
    tensor = {
        "name": input_name,
        "shape": list(sample.shape),
        "datatype": "FP32",
        "data": sample.reshape(-1).tolist(),
    }
    return json.dumps({"inputs": [tensor], "parameters": needs}).encode()


def rest_binary_body(
    sample: np.ndarray, input_name: str, needs: dict[str, float]
) -> tuple[bytes, dict[str, str]]:
    """A body as tritonclient sends it: JSON header, then the input's raw bytes; the
    output asked for in binary too."""
    raw = np.ascontiguousarray(sample, dtype="<f4").tobytes()
    header = json.dumps(
        {
            "inputs": [
                {
                    "name": input_name,
                    "shape": list(sample.shape),
                    "datatype": "FP32",
                    "parameters": {"binary_data_size": len(raw)},
                }
            ],
            "parameters": {**needs, "binary_data_output": True},
        }
    ).encode()
    return header + raw, {BINARY_HEADER: str(len(header))}


def grpc_request(app: str, sample: np.ndarray, input_name: str, needs: dict[str, float]) -> bytes:
    tensor = pb.ModelInferRequest.InferInputTensor(
        name=input_name, datatype="FP32", shape=list(sample.shape)
    )
    request = pb.ModelInferRequest(
        model_name=app,
        inputs=[tensor],
        parameters={k: pb.InferParameter(double_param=v) for k, v in needs.items()},
        raw_input_contents=[np.ascontiguousarray(sample, dtype="<f4").tobytes()],
    )
    return request.SerializeToString()


def grpc_chosen_variant(address: str, request: bytes) -> str:
    async def main() -> bytes:
        async with grpc.aio.insecure_channel(address) as channel:
            call: grpc.aio.UnaryUnaryMultiCallable[bytes, bytes] = channel.unary_unary(GRPC_INFER)
            return await call(request)

    return pb.ModelInferResponse.FromString(asyncio.run(main())).model_version


@contextlib.asynccontextmanager
async def _aio_channel(address: str, request: bytes) -> AsyncIterator[Send]:
    async with grpc.aio.insecure_channel(address) as channel:
        # no serializers: the request is sent as prepared, the answer left as bytes
        call: grpc.aio.UnaryUnaryMultiCallable[bytes, bytes] = channel.unary_unary(GRPC_INFER)

        async def send() -> tuple[int, str]:
            try:
                await call(request)
            except grpc.aio.AioRpcError as exc:
                return 500, f"{exc.code().name} {exc.details()}"
            return 200, ""

        yield send


async def grpc_closed_loop(
    address: str,
    request: bytes,
    *,
    concurrency: int,
    duration_s: float = 1e9,
    requests: int = 10**9,
    record: bool = True,
) -> LoadResult:
    """bench.loadgen's :func:`~bench.loadgen.run_closed_loop` over ``grpc.aio``."""
    return await run_closed_loop(
        lambda: _aio_channel(address, request),
        concurrency=concurrency,
        duration_s=duration_s,
        requests=requests,
        record=record,
    )


Load = Callable[..., LoadResult]  # bench.loadgen.closed_loop's keywords: concurrency, ...


def interleaved(
    loads: Mapping[str, Load],
    *,
    rounds: int,
    requests: int,
    duration_s: float,
    watch: procstat.ProcWatch | None = None,
) -> dict[str, dict[str, dict[str, Any]]]:
    """Every route at 1 client (``requests`` in all, split over the rounds), then at 16
    (``duration_s`` in all), in ``rounds`` rounds, routes taking turns in a rotated
    order; each route's figures over all its rounds (see the module's docstring). With a
    ``watch``, the CPU per query of its process groups in each 16-client round."""
    names = list(loads)
    runs: dict[str, dict[str, list[LoadResult]]] = {n: {"1": [], "16": []} for n in names}
    procs: dict[str, list[dict[str, dict[str, float]]]] = {n: [] for n in names}
    for turn in range(rounds):
        order = names[turn % len(names) :] + names[: turn % len(names)]
        for name in order:
            load = loads[name](concurrency=1, requests=max(requests // rounds, 1))
            runs[name]["1"].append(load)
        for name in order:
            finish = watch.begin() if watch is not None else None
            load = loads[name](concurrency=16, duration_s=duration_s / rounds)
            runs[name]["16"].append(load)
            if finish is not None:
                procs[name].append(finish(load.ok))
    return {
        name: {
            clients: pooled(results, procs[name] if clients == "16" else [])
            for clients, results in by_clients.items()
        }
        for name, by_clients in runs.items()
    }


def pooled(
    results: list[LoadResult], procs: list[dict[str, dict[str, float]]] | None = None
) -> dict[str, Any]:
    """One route's rounds at one concurrency: latencies pooled, throughput the median
    of the rounds' (each round's kept, for the ratios); with ``procs``, the rounds'
    median CPU per query of each process group."""
    merged = LoadResult(results[0].concurrency, sum(r.wall_s for r in results))
    for result in results:
        merged.latencies_ms.extend(result.latencies_ms)
        merged.error_samples.extend(result.error_samples)
        for status, count in result.statuses.items():
            merged.statuses[status] = merged.statuses.get(status, 0) + count
    rounds_qps = [round(r.throughput_qps, 1) for r in results]
    figures = merged.summary() | {
        "throughput_qps": round(statistics.median(rounds_qps), 1),
        "rounds_qps": rounds_qps,
    }
    if merged.error_samples:
        figures["error_samples"] = merged.error_samples[:3]
    if procs:
        figures["procs"] = procstat.median_figures(procs)
    return figures


def ratios(routes: dict[str, dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Each route's throughput over /v1's, at each concurrency: the median of the
    per-round ratios when the rounds were interleaved, else of the totals."""
    base = routes["v1"]

    def ratio(figures: dict[str, Any], v1: dict[str, Any]) -> float:
        pairs = list(zip(figures.get("rounds_qps", ()), v1.get("rounds_qps", ()), strict=False))
        if not pairs:
            pairs = [(figures["throughput_qps"], v1["throughput_qps"])]
        return round(statistics.median(float(a) / max(float(b), 1e-9) for a, b in pairs), 3)

    return {
        name: {clients: ratio(figures[clients], base[clients]) for clients in figures}
        for name, figures in routes.items()
        if name != "v1"
    }


OIP_TARGET_RATIO = 0.9


def run_oip(
    stack: Any,
    app: str,
    variant: str,
    sample: np.ndarray,
    v1: tuple[str, bytes],
    tensor: tuple[str, dict[str, float]],
    requests: int,
    duration_s: float,
    rounds: int,
    watch: procstat.ProcWatch | None = None,
) -> dict[str, dict[str, dict[str, Any]]]:
    """The same query over /v1 and the Open Inference Protocol (v2 REST with JSON tensors,
    with binary tensors, and gRPC), each at 1 and 16 clients after a warm-up, the routes
    interleaved in ``rounds`` rounds (bench/oip.py)."""
    url, address = stack.gateway_url, stack.grpc_address
    path = f"/v2/models/{app}/infer"
    input_name, needs = tensor
    json_body = rest_json_body(sample, input_name, needs)
    binary_body, binary_headers = rest_binary_body(sample, input_name, needs)
    grpc_body = grpc_request(app, sample, input_name, needs)
    chosen = {
        "v2_json": _v2_variant(url, path, json_body, {}),
        "v2_binary": _v2_variant(url, path, binary_body, binary_headers),
        "grpc": grpc_chosen_variant(address, grpc_body),
    }
    if set(chosen.values()) != {variant}:
        raise RuntimeError(f"the routes chose {chosen}, the benchmark measures {variant}")

    def rest(route: str, body: bytes, headers: dict[str, str]) -> Load:
        def load(**kwargs: Any) -> LoadResult:
            return asyncio.run(closed_loop(url, route, body, headers=headers, **kwargs))

        return load

    def grpc(**kwargs: Any) -> LoadResult:
        return asyncio.run(grpc_load.closed_loop(address, GRPC_INFER, grpc_body, **kwargs))

    def grpc_aio(**kwargs: Any) -> LoadResult:
        return asyncio.run(grpc_closed_loop(address, grpc_body, **kwargs))

    loads = {
        "v1": rest(v1[0], v1[1], {}),
        "v2_json": rest(path, json_body, {}),
        "v2_binary": rest(path, binary_body, binary_headers),
        "grpc": grpc,
        "grpc_aio": grpc_aio,
    }
    for load in loads.values():
        load(concurrency=4, duration_s=1.0, record=False)
    routes = interleaved(
        loads, rounds=rounds, requests=requests, duration_s=duration_s, watch=watch
    )
    for name, by_clients in routes.items():
        for clients, figures in by_clients.items():
            if figures["errors"]:
                print(f"{name} at {clients} clients: errors such as {figures['error_samples']}")
    return routes


def _v2_variant(url: str, path: str, body: bytes, headers: dict[str, str]) -> str:
    import httpx

    response = httpx.post(url + path, content=body, headers=headers)
    response.raise_for_status()
    return str(response.headers["x-infaas-variant"])


def report_oip(figures: dict[str, Any]) -> None:
    routes, ratios = figures["routes"], figures["throughput_ratio_to_v1"]
    print("Open Inference Protocol, the same query and variant")
    print(
        f"{'route':12} {'clients':>7} {'p50 ms':>8} {'p99 ms':>8} {'q/s':>9} "
        f"{'errors':>6} {'/v1':>6}  CPU ms/query gateway, worker, client"
    )
    for name, by_clients in routes.items():
        for clients, m in by_clients.items():
            ratio = ratios.get(name, {}).get(clients, 1.0)
            cpu = m.get("procs", {})
            per_query = ", ".join(
                f"{cpu[g]['cpu_ms_per_query']:.3f}"
                for g in ("gateway", "worker", "client")
                if g in cpu
            )
            print(
                f"{name:12} {clients:>7} {m['p50_ms']:8.3f} {m['p99_ms']:8.3f} "
                f"{m['throughput_qps']:9.0f} {m['errors']:6} {ratio:6.2f}  {per_query}"
            )
    print(
        f"target: throughput >= {figures['target_ratio']} x /v1's (routes interleaved in "
        f"{figures.get('rounds', 1)} rounds; medians of the rounds)"
    )
