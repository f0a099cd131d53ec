"""Publishes this worker's report to live state every interval, with a TTL."""

from __future__ import annotations

import logging
import os
import socket
import threading

import psutil

from queues.errors import InfaasError
from registry.livestate import LiveState, WorkerReport, now_ms
from workers.server import VariantServer

log = logging.getLogger(__name__)


class Monitor:
    def __init__(
        self,
        server: VariantServer,
        live: LiveState,
        *,
        cores: int,
        interval_s: float = 1.0,
        celery_name: str = "",
    ) -> None:
        self._server = server
        self._live = live
        self._cores = cores
        self._interval_s = interval_s
        self._celery_name = celery_name
        self._process = psutil.Process()
        self._process.cpu_percent()  # start the CPU-time window
        self._started_ms = now_ms()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="infaas-monitor", daemon=True)

    def start(self) -> None:
        self.publish()
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(5)
        try:
            self._live.remove_worker(self._server.worker_id)
        except InfaasError as exc:
            log.warning("could not remove this worker from live state: %s", exc.message)

    def report(self) -> WorkerReport:
        with self._process.oneshot():
            cpu_util = self._process.cpu_percent() / (100.0 * max(self._cores, 1))
            memory_mb = self._process.memory_info().rss / 2**20
        return WorkerReport(
            worker_id=self._server.worker_id,
            hardware=self._server.hardware,
            host=socket.gethostname(),
            pid=os.getpid(),
            cores=self._cores,
            variants=self._server.collect(),
            cpu_util=round(min(cpu_util, 1.0), 4),
            memory_mb=round(memory_mb, 1),
            celery_name=self._celery_name,
            started_ms=self._started_ms,
            heartbeat_ms=now_ms(),
        )

    def publish(self) -> None:
        try:
            self._live.put_worker(self.report())
        except InfaasError as exc:
            log.warning("could not publish to live state: %s", exc.message)

    def _run(self) -> None:
        while not self._stop.wait(self._interval_s):
            self.publish()
