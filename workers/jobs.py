"""Running one chunk of a batch job on a worker.

A chunk runs once at a time and writes its output once: the worker claims it in the
catalog (a lease it renews while it works), skips it if its output object already exists
(the last worker died after writing), runs its rows through the variant at the variant's
throughput-optimal batch, writes ``chunk-NNNNN.npz`` under the job's output prefix in one
atomic put, then records it done; whoever records the last chunk writes the manifest.

Online queries keep their latency objective while a job runs: chunks run on one thread
of their own at the lowest OS priority (nice 19; the runtime's own threads, created on
it, inherit that), in slices of one batch, pausing while the worker's online variants are
overloaded or busy. A worker of the wrong hardware hands a chunk back.
"""

from __future__ import annotations

import concurrent.futures
import io
import logging
import os
import queue
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from queues.errors import InfaasError, InvalidInput, Unavailable, UnknownJob, WorkerError
from registry.catalog import Catalog
from registry.jobs import Chunk, Claim, Job, JobStore
from registry.jobs.locations import Location
from registry.jobs.messages import send_chunks
from registry.jobs.objects import finalize_job, store_for
from registry.jobs.pacing import online_pressure
from registry.jobs.recovery import CLAIM_DONE, CLAIM_EXHAUSTED, CLAIM_HELD, CLAIM_RUN
from registry.jobs.settings import JobSettings
from registry.livestate import LiveState
from registry.pricing import usd_for
from registry.store import ObjectStore
from registry.types import App, Model, Variant
from workers.artifacts import artifact_cache_key, fetch_artifact
from workers.runtimes.base import Runtime, RuntimeSpec, load_runtime

log = logging.getLogger(__name__)
T = TypeVar("T")
LOWEST_PRIORITY = 19
YIELD_SLEEP_S = 0.05


class ChunkStopped(Exception):
    """The chunk must stop without writing: its job was cancelled or failed, or another
    worker took it over."""


@dataclass(frozen=True, slots=True)
class ChunkResult:
    wrote: bool
    model_ms: float = 0.0
    cost_usd: float = 0.0


# ------------------------------------------------------------------ the batch thread


_Item = tuple[Callable[[], Any], concurrent.futures.Future[Any]]


class BatchThread:
    """One thread that runs batch work, at the lowest OS priority (Linux gives each
    thread its own nice value; threads started from it inherit it)."""

    def __init__(self, *, low_priority: bool) -> None:
        self._low_priority = low_priority
        self._work: queue.SimpleQueue[_Item | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._loop, name="infaas-batch", daemon=True)
        self._started = False
        self._lock = threading.Lock()

    def run(self, fn: Callable[[], T]) -> T:
        """Run ``fn`` on the batch thread and return what it returns (or raise)."""
        with self._lock:
            if not self._started:
                self._thread.start()
                self._started = True
        future: concurrent.futures.Future[T] = concurrent.futures.Future()
        self._work.put((fn, future))
        return future.result()

    def close(self) -> None:
        self._work.put(None)

    def _loop(self) -> None:
        if self._low_priority:
            try:
                os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), LOWEST_PRIORITY)
            except OSError as exc:  # pragma: no cover - raising nice is always allowed on Linux
                log.warning("could not lower the batch thread's priority: %s", exc)
        while True:
            item = self._work.get()
            if item is None:
                return
            fn, future = item
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(fn())
            except BaseException as exc:
                future.set_exception(exc)


# ------------------------------------------------------------------------- caches


class RuntimeCache:
    """The last few variants loaded for chunks (used on the batch thread only)."""

    def __init__(self, store: ObjectStore, cache_dir: Path, size: int) -> None:
        self._store = store
        self._cache_dir = cache_dir
        self._size = size
        self._loaded: OrderedDict[str, Runtime] = OrderedDict()

    def get(self, variant: Variant, app: App, model: Model) -> Runtime:
        key = artifact_cache_key(variant)
        runtime = self._loaded.get(key)
        if runtime is not None:
            self._loaded.move_to_end(key)
            return runtime
        # the variant server's cache: both share one download
        path = fetch_artifact(self._store, self._cache_dir, variant)
        spec = RuntimeSpec.of_variant(variant, app.signature.name, model.output_name)
        runtime = load_runtime(spec, path)
        self._loaded[key] = runtime
        while len(self._loaded) > self._size:
            _, old = self._loaded.popitem(last=False)
            old.close()
        return runtime

    def close(self) -> None:
        for runtime in self._loaded.values():
            runtime.close()
        self._loaded.clear()


class InputCache:
    """The last input objects read (a job's chunks often share one), each checked
    against the size it had when the job was submitted."""

    def __init__(self, store: ObjectStore, size: int = 2) -> None:
        self._store = store
        self._size = size
        self._arrays: OrderedDict[tuple[str, str, int], np.ndarray] = OrderedDict()

    def get(self, location: Location, key: str, size_bytes: int) -> np.ndarray:
        cache_key = (location.bucket, key, size_bytes)
        array = self._arrays.get(cache_key)
        if array is not None:
            self._arrays.move_to_end(cache_key)
            return array
        data = store_for(self._store, location).get_bytes(key)
        if len(data) != size_bytes:
            raise InvalidInput(
                f"input object {key!r} of {location.url} changed since the job was submitted "
                f"({size_bytes} bytes then, {len(data)} now); submit a new job for new inputs"
            )
        try:
            with np.load(io.BytesIO(data), allow_pickle=False) as archive:
                array = np.asarray(archive["inputs"])
        except (ValueError, OSError, KeyError) as exc:
            raise InvalidInput(
                f"input object {key!r} of {location.url} is unreadable: {exc}"
            ) from exc
        self._arrays[cache_key] = array
        while len(self._arrays) > self._size:
            self._arrays.popitem(last=False)
        return array


def encode_outputs(outputs: np.ndarray, first_item: int) -> bytes:
    """One chunk's output object: the outputs, their labels, and each item's index."""
    out = np.asarray(outputs, dtype=np.float32)
    labels = out.argmax(axis=1).astype(np.int64) if out.ndim == 2 else np.zeros(0, np.int64)
    index = np.arange(first_item, first_item + len(out), dtype=np.int64)
    buffer = io.BytesIO()
    np.savez(buffer, outputs=out, labels=labels, index=index)
    return buffer.getvalue()


# ------------------------------------------------------------------------- leases


class Lease:
    """Keeps a chunk's claim: renews it every ``renew_interval_s`` and stops the chunk
    when the claim is gone (job cancelled or failed, chunk taken over)."""

    def __init__(self, jobs: JobStore, chunk: Chunk, worker: str, settings: JobSettings) -> None:
        self._jobs = jobs
        self._chunk = chunk
        self._worker = worker
        self._settings = settings
        self._renewed = time.monotonic()

    def check(self, *, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._renewed < self._settings.renew_interval_s:
            return
        self._renewed = now
        if not self._jobs.renew(
            self._chunk.job_id, self._chunk.index, self._worker, self._settings.lease_s
        ):
            raise ChunkStopped(
                f"chunk {self._chunk.index} of job {self._chunk.job_id} stopped: the job is "
                "no longer running, or another worker took the chunk over"
            )


# ------------------------------------------------------------------------- runner


class ChunkRunner:
    """Runs chunks for one worker process; its Celery task threads call :meth:`run`."""

    def __init__(
        self,
        *,
        catalog: Catalog,
        store: ObjectStore,
        live: LiveState,
        cache_dir: Path,
        worker_id: str,
        hardware: str,
        queue_prefix: str,
        celery: Any,
        settings: JobSettings,
    ) -> None:
        self.worker_id = worker_id
        self.hardware = hardware
        self._catalog = catalog
        self._store = store
        self._live = live
        self._prefix = queue_prefix
        self._celery = celery
        self.settings = settings
        self.jobs = JobStore(catalog)
        self.batch_thread = BatchThread(low_priority=settings.low_priority)
        self._runtimes = RuntimeCache(store, cache_dir, settings.runtime_cache)
        self._inputs = InputCache(store)
        self._pressure_at = 0.0
        self._pressure = False

    def run(self, job_id: str, index: int) -> dict[str, Any]:
        """Do what the chunk needs; returns what happened (for the task's log)."""
        outcome, detail = self.batch_thread.run(lambda: self._run(job_id, index))
        if outcome in ("failed", "requeued"):
            log.warning("chunk %d of job %s %s: %s", index, job_id, outcome, detail)
        return {"job": job_id, "chunk": index, "outcome": outcome, "detail": detail}

    def close(self) -> None:
        self.batch_thread.run(self._runtimes.close)
        self.batch_thread.close()

    # -- on the batch thread

    def _run(self, job_id: str, index: int) -> tuple[str, str]:
        try:
            job = self.jobs.get(job_id)
        except UnknownJob:
            return "skipped", "no such job (deleted?)"
        if job.finished:
            return "skipped", f"the job is {job.status}"
        if job.hardware != self.hardware:
            self._requeue(job, index)
            return "requeued", f"needs a {job.hardware} worker, this one is {self.hardware}"
        claim = self.jobs.claim(
            job_id,
            index,
            worker=self.worker_id,
            variant=job.variant,
            alive=self._alive(),
            lease_s=self.settings.lease_s,
            max_attempts=self.settings.max_attempts,
        )
        if claim.decision == CLAIM_RUN:
            return self._work(claim.job, claim.chunk)
        return self._not_run(claim)

    def _not_run(self, claim: Claim) -> tuple[str, str]:
        if claim.decision == CLAIM_DONE:
            self._finalize(claim.job.id)
            return "skipped", "done already"
        if claim.decision == CLAIM_HELD:
            # Most likely a duplicate. Should its holder have died before live state
            # noticed, this copy is the one left to run it: look again later.
            self._requeue(claim.job, claim.chunk.index)
            return "deferred", f"running on {claim.chunk.worker}; looking again later"
        if claim.decision == CLAIM_EXHAUSTED:
            return "failed", claim.job.error
        return "skipped", f"the job is {claim.decision}"

    def _work(self, job: Job, chunk: Chunk) -> tuple[str, str]:
        index = chunk.index
        try:
            result = self._execute(job, chunk)
        except ChunkStopped as exc:
            return "stopped", str(exc)
        except Unavailable as exc:
            # a passing outage (store, catalog, live state): hand the chunk back for later
            self._release(chunk, exc.message)
            self._requeue(job, index)
            return "requeued", exc.message
        except InfaasError as exc:
            self.jobs.fail(job.id, f"chunk {index}: {exc.message}", index=index)
            return "failed", exc.message
        except Exception as exc:  # a bug or a model that crashed: fail clearly, do not loop
            log.exception("chunk %d of job %s failed", index, job.id)
            reason = f"chunk {index} hit an internal error ({type(exc).__name__}: {exc})"
            self.jobs.fail(job.id, reason, index=index)
            return "failed", reason
        all_done = self.jobs.complete(
            job.id,
            index,
            worker=self.worker_id,
            variant=job.variant,
            wrote=result.wrote,
            model_ms=result.model_ms,
            cost_usd=result.cost_usd,
        )
        if all_done:
            self._finalize(job.id)
        return ("wrote" if result.wrote else "found"), chunk.output_key

    def _execute(self, job: Job, chunk: Chunk) -> ChunkResult:
        output = store_for(self._store, job.output)
        if output.exists(chunk.output_key):
            return ChunkResult(wrote=False)  # written by a worker that died
        variant = self._catalog.get_variant(job.variant)
        if variant.profile is None or not variant.ready:
            raise WorkerError(f"variant {variant.id} is {variant.status}, not ready to run")
        app = self._catalog.get_app(job.app)
        runtime = self._runtimes.get(variant, app, self._catalog.get_model(variant.model))
        rows = self._inputs.get(job.input, chunk.input_key, chunk.input_size_bytes)
        rows = rows[chunk.row_start : chunk.row_stop].astype(app.signature.dtype, copy=False)
        lease = Lease(self.jobs, chunk, self.worker_id, self.settings)
        batch = variant.profile.batch_limit
        pieces: list[np.ndarray] = []
        model_ms = 0.0
        for start in range(0, len(rows), batch):
            lease.check()
            self._yield_to_online(lease)
            started = time.perf_counter()
            pieces.append(runtime.predict(rows[start : start + batch]))
            model_ms += (time.perf_counter() - started) * 1000.0
        payload = encode_outputs(np.concatenate(pieces), chunk.first_item)
        lease.check(force=True)  # cancelled meanwhile: stop without writing
        output.put_bytes(chunk.output_key, payload)
        cost_usd = usd_for(variant.cost_per_hour, model_ms)
        return ChunkResult(wrote=True, model_ms=model_ms, cost_usd=cost_usd)

    def _yield_to_online(self, lease: Lease) -> None:
        while self._online_pressure():
            lease.check()
            time.sleep(YIELD_SLEEP_S)

    def _online_pressure(self) -> bool:
        if not self.settings.yield_to_online:
            return False
        now = time.monotonic()
        if now - self._pressure_at >= self.settings.yield_check_s:
            self._pressure_at = now
            try:
                report = self._live.snapshot().workers.get(self.worker_id)
            except InfaasError:
                report = None
            self._pressure = online_pressure(report, self.settings.yield_busy)
        return self._pressure

    def _alive(self) -> frozenset[str] | None:
        """Workers live right now, this one excluded (on the batch thread no chunk of
        this worker is running, so a claim of its own is left over from before); None
        when live state cannot be read (every other holder then counts as alive)."""
        try:
            workers = self._live.snapshot().workers
        except InfaasError:
            return None
        return frozenset(w for w in workers if w != self.worker_id)

    def _requeue(self, job: Job, index: int) -> None:
        send_chunks(
            self._celery,
            self._prefix,
            job.app,
            job.id,
            [index],
            priority=job.priority,
            countdown_s=self.settings.requeue_delay_s,
        )
        self.jobs.mark_published(job.id, [index])

    def _release(self, chunk: Chunk, error: str) -> None:
        try:
            self.jobs.release(chunk.job_id, chunk.index, self.worker_id, error)
        except InfaasError as exc:
            log.warning("could not hand chunk %d back: %s", chunk.index, exc.message)

    def _finalize(self, job_id: str) -> None:
        try:
            finalize_job(self.jobs, self._store, job_id)
        except InfaasError as exc:  # the gateways' sweeper finishes it later
            log.warning("could not write the manifest of job %s: %s", job_id, exc.message)
