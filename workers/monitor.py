"""Every interval: judge each loaded variant's state and publish this worker's report to
live state, with a TTL (a dead worker drops out by itself).

The judging is the pure state machine of :mod:`workers.states`; this module gathers its
inputs (the replicas' window statistics, the queue depths from the broker, and a short
probe of inference latency when an Interfered variant gets no queries to judge by).
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import replace

import numpy as np
import psutil
from kombu import Connection

from queues.depth import QueueProbe
from queues.errors import InfaasError
from registry.livestate import INTERFERED, LiveState, VariantLoad, WorkerReport, now_ms
from workers.server import LoadedVariant, VariantServer
from workers.states import Observation, StateSettings, next_health
from workers.stats import WindowStats

log = logging.getLogger(__name__)


class Monitor:
    def __init__(
        self,
        server: VariantServer,
        live: LiveState,
        *,
        cores: int,
        connect: Callable[[], Connection],
        interval_s: float = 1.0,
        celery_name: str = "",
        state_settings: StateSettings,
        loads_on_demand: bool = True,
    ) -> None:
        self._server = server
        self._live = live
        self._cores = cores
        self._interval_s = interval_s
        self._celery_name = celery_name
        self._loads_on_demand = loads_on_demand
        self._states = state_settings
        self._probe = QueueProbe(connect)
        self._process = psutil.Process()
        self._process.cpu_percent()  # start the CPU-time window
        self._started_ms = now_ms()
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread = threading.Thread(target=self._run, name="infaas-monitor", daemon=True)

    def start(self) -> None:
        self.publish()
        self._thread.start()

    def report_soon(self) -> None:
        """Publish the next report now rather than at the end of the interval (a variant
        was just loaded: the queries waiting for it see it at once)."""
        self._wake.set()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join(5)
        self._probe.close()
        try:
            self._live.remove_worker(self._server.worker_id)
        except InfaasError as exc:
            log.warning("could not remove this worker from live state: %s", exc.message)

    # -- one tick -------------------------------------------------------------------

    def _queue_depths(self, loaded: dict[str, LoadedVariant]) -> dict[str, int]:
        try:
            depths = self._probe.depths(lv.config.queue for lv in loaded.values())
        except InfaasError as exc:
            log.warning("queue depths unavailable: %s", exc.message)
            return {}
        return {queue: depth.messages for queue, depth in depths.items()}

    def _probe_latency(self, loaded: LoadedVariant, samples: int) -> float:
        """Median inference time at batch 1 on a blank input, for an Interfered variant
        that gets no queries (the selector avoids it) and so could never clear."""
        item = np.zeros((1, *loaded.config.item_shape), dtype=np.float32)
        times = []
        for _ in range(samples):
            started = time.perf_counter()
            loaded.runtime.predict(item)
            times.append((time.perf_counter() - started) * 1000)
        return float(np.median(times))

    def judge(self, loaded: LoadedVariant, window: WindowStats, queued: int) -> VariantLoad:
        profile = loaded.variant.profile
        obs = Observation(
            now_ms=now_ms(),
            window_s=window.window_s,
            replicas=len(loaded.replicas),
            arrived=window.arrived,
            batches=window.batches,
            mean_batch=window.mean_batch,
            model_p50_ms=window.model_p50_ms,
            busy_ms=window.busy_ms,
            backlog=window.outstanding + queued,
            p50_ms=window.p50_ms,
        )
        if profile is not None:
            if loaded.health.state == INTERFERED and window.batches < self._states.min_batches:
                probed = self._probe_latency(loaded, self._states.min_batches)
                obs = replace(
                    obs, batches=self._states.min_batches, mean_batch=1.0, model_p50_ms=probed
                )
            loaded.health = next_health(loaded.health, obs, profile, self._states)
        replicas = max(len(loaded.replicas), 1)
        return VariantLoad(
            variant=loaded.variant.id,
            app=loaded.variant.app,
            state=loaded.health.state,
            state_reason=loaded.health.reason,
            replicas=len(loaded.replicas),
            qps=window.qps,
            p50_ms=window.p50_ms,
            p99_ms=window.p99_ms,
            model_p50_ms=window.model_p50_ms,
            mean_batch=window.mean_batch,
            outstanding=window.outstanding + queued,
            backlog=window.outstanding + queued,
            completed=window.completed,
            errors=window.errors,
            expired=window.expired,
            max_batch=loaded.config.max_batch,
            since_ms=loaded.loaded_ms,
            busy=round(window.busy_ms / (window.window_s * 1000.0 * replicas), 4),
        )

    def _gpu_figures(self) -> tuple[float, float]:
        """(GPU utilisation 0..1, GPU memory in use in MB) of a GPU worker.

        Utilisation is NVML's busy time (the prototype reported memory in use as
        "utilisation"); it needs nvidia-ml-py (requirements-gpu.txt) and is 0 without it.
        Memory is what this process holds on the device, from torch.
        """
        if self._server.hardware != "gpu":
            return 0.0, 0.0
        util = 0.0
        try:
            import pynvml

            pynvml.nvmlInit()
            handle = pynvml.nvmlDeviceGetHandleByIndex(0)
            util = pynvml.nvmlDeviceGetUtilizationRates(handle).gpu / 100.0
        except Exception:  # no NVML here: report memory only
            util = 0.0
        try:
            import torch

            memory_mb = torch.cuda.memory_allocated() / 2**20 if torch.cuda.is_available() else 0
        except ImportError:
            memory_mb = 0.0
        return util, float(memory_mb)

    def report(self) -> WorkerReport:
        loaded = self._server.loaded()
        depths = self._queue_depths(loaded)
        variants = {
            vid: self.judge(lv, lv.stats.collect(), depths.get(lv.config.queue, 0))
            for vid, lv in loaded.items()
        }
        with self._process.oneshot():
            cpu_util = self._process.cpu_percent() / (100.0 * max(self._cores, 1))
            memory_mb = self._process.memory_info().rss / 2**20
        gpu_util, gpu_memory_mb = self._gpu_figures()
        return WorkerReport(
            worker_id=self._server.worker_id,
            hardware=self._server.hardware,
            host=socket.gethostname(),
            pid=os.getpid(),
            cores=self._cores,
            variants=variants,
            cpu_util=round(min(cpu_util, 1.0), 4),
            memory_mb=round(memory_mb, 1),
            gpu_util=round(gpu_util, 4),
            gpu_memory_mb=round(gpu_memory_mb, 1),
            celery_name=self._celery_name,
            loads_on_demand=self._loads_on_demand,
            started_ms=self._started_ms,
            heartbeat_ms=now_ms(),
        )

    def publish(self) -> None:
        try:
            self._live.put_worker(self.report())
        except InfaasError as exc:
            log.warning("could not publish to live state: %s", exc.message)

    def _run(self) -> None:
        while True:
            self._wake.wait(self._interval_s)
            self._wake.clear()
            if self._stop.is_set():
                return
            try:
                self.publish()
            except Exception:  # a bug must not end the reports: the worker would vanish
                log.exception("publishing this worker's report failed; trying again")
