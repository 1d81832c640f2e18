"""Prometheus metrics, one registry per app, named by stage with base units.

Every total here is the replica's. A server of several processes (API front ends and engines,
service/supervisor.py) runs prometheus-client's multiprocess mode: each process writes its
samples to files in PROMETHEUS_MULTIPROC_DIR and /metrics, from any front end, sums them.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Iterator

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    generate_latest,
    multiprocess,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from service.batching.batcher import BatchReport

# Sub-millisecond to tens of seconds.
_LATENCY_BUCKETS_S = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0
)
_SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)
_TOKEN_BUCKETS = (16, 64, 256, 512, 1024, 2048, 4096, 8192, 16384, 32768, 65536)
_RATIO_BUCKETS = (0.0, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.8, 1.0)


class Metrics:
    """Every metric rmserve exports; labels are bounded (model, version, endpoint, code)."""

    def __init__(self) -> None:
        self.multiprocess = "PROMETHEUS_MULTIPROC_DIR" in os.environ
        self.registry = CollectorRegistry()
        self._declare_request_metrics(self.registry)
        self._declare_batch_metrics(self.registry)
        self._declare_model_metrics(self.registry)
        self.device_memory = DeviceMemoryCollector()
        if self.multiprocess:  # read at scrape time by one process only: the engines sample it
            self.device_memory_used = Gauge(
                "rmserve_device_memory_used_bytes", "Memory in use on a device", ["device"],
                registry=self.registry, multiprocess_mode="livesum",
            )
            self.device_memory_total = Gauge(
                "rmserve_device_memory_total_bytes", "Memory a device has", ["device"],
                registry=self.registry, multiprocess_mode="livemax",
            )
        else:
            self.registry.register(self.device_memory)
            ProcessCollector(registry=self.registry)

    def _declare_request_metrics(self, r: CollectorRegistry) -> None:
        per_request = ["model", "version", "endpoint"]
        self.requests = Counter(
            "rmserve_requests", "Requests answered (HTTP requests and gRPC calls)", [*per_request, "code"],
            registry=r,
        )
        self.errors = Counter(
            "rmserve_errors", "Requests answered with an error, by error type",
            [*per_request, "type"], registry=r,
        )
        self.request_duration = Histogram(
            "rmserve_request_duration_seconds", "End-to-end request latency",
            per_request, buckets=_LATENCY_BUCKETS_S, registry=r,
        )
        self.inflight = Gauge(
            "rmserve_inflight_requests", "HTTP requests being handled now", ["endpoint"], registry=r,
            multiprocess_mode="livesum",
        )

    def _declare_batch_metrics(self, r: CollectorRegistry) -> None:
        self.items = Counter("rmserve_items", "Items scored", ["model", "version"], registry=r)
        self.tokens = Counter("rmserve_tokens", "Tokens scored", ["model", "version"], registry=r)
        self.queue_wait = Histogram(
            "rmserve_queue_wait_seconds", "Time an item waited before its forward pass",
            ["model", "version"], buckets=_LATENCY_BUCKETS_S, registry=r,
        )
        self.inference_duration = Histogram(
            "rmserve_inference_duration_seconds", "Duration of one batched forward pass",
            ["model", "version"], buckets=_LATENCY_BUCKETS_S, registry=r,
        )
        self.batch_size = Histogram(
            "rmserve_batch_size", "Rows per forward pass",
            ["model", "version"], buckets=_SIZE_BUCKETS, registry=r,
        )
        self.batch_tokens = Histogram(
            "rmserve_batch_tokens", "Padded tokens per forward pass",
            ["model", "version"], buckets=_TOKEN_BUCKETS, registry=r,
        )
        self.padding_ratio = Histogram(
            "rmserve_padding_ratio", "Share of padded tokens in a forward pass",
            ["model", "version"], buckets=_RATIO_BUCKETS, registry=r,
        )

    def _declare_model_metrics(self, r: CollectorRegistry) -> None:
        self.dropped_items = Counter(
            "rmserve_dropped_items", "Queued items dropped uncomputed: deadline passed, client gone",
            ["model", "version", "reason"], registry=r,
        )
        self.shared_prefix_tokens = Counter(
            "rmserve_shared_prefix_tokens",
            "Prompt tokens computed once for a group of items instead of once per item",
            ["model", "version"], registry=r,
        )
        self.cache_hits = Counter(
            "rmserve_cache_hits", "Items answered from the result cache", ["model", "version"], registry=r
        )
        self.cache_misses = Counter(
            "rmserve_cache_misses", "Items looked up in the result cache and computed",
            ["model", "version"], registry=r,
        )
        self.cache_bytes = Gauge("rmserve_cache_bytes", "Size of the result cache", registry=r,
                                 multiprocess_mode="livesum")
        self.queue_depth = Gauge(
            "rmserve_queue_depth", "Items waiting for a forward pass", ["model", "version"],
            registry=r, multiprocess_mode="livesum",
        )
        self.model_info = Gauge(
            "rmserve_model_info", "Loaded models (value 1)",
            ["model", "version", "backend", "device", "dtype"], registry=r, multiprocess_mode="livemax",
        )
        self.model_ready = Gauge(
            "rmserve_model_ready", "1 once the model is loaded, warmed up and served; 0 before",
            ["model", "version"], registry=r, multiprocess_mode="livemin",  # 0 while any process loads
        )

    def count_request(
        self, *, model: str, version: str, endpoint: str, code: str, error_type: str | None, duration_s: float
    ) -> None:
        """One answered request (HTTP or gRPC), by model, version, endpoint and status code; an
        error (`error_type` given) is counted by its type too."""
        labels = {"model": model, "version": version, "endpoint": endpoint}
        self.requests.labels(**labels, code=code).inc()
        self.request_duration.labels(**labels).observe(duration_s)
        if error_type is not None:
            self.errors.labels(**labels, type=error_type).inc()

    def render(self) -> bytes:
        if not self.multiprocess:
            return generate_latest(self.registry)
        every_process = CollectorRegistry()
        multiprocess.MultiProcessCollector(every_process)
        return generate_latest(every_process)

    def for_model(self, model: str, version: str) -> ModelMetrics:
        return ModelMetrics(self, model, version)


class ModelMetrics:
    """The batcher's observer for one model: turns batch reports into metric samples."""

    def __init__(self, metrics: Metrics, model: str, version: str) -> None:
        labels = {"model": model, "version": version}
        self._queue_wait = metrics.queue_wait.labels(**labels)
        self._inference = metrics.inference_duration.labels(**labels)
        self._batch_size = metrics.batch_size.labels(**labels)
        self._batch_tokens = metrics.batch_tokens.labels(**labels)
        self._padding = metrics.padding_ratio.labels(**labels)
        self._queue_depth = metrics.queue_depth.labels(**labels)
        self.items = metrics.items.labels(**labels)
        self.tokens = metrics.tokens.labels(**labels)
        self.shared_prefix_tokens = metrics.shared_prefix_tokens.labels(**labels)
        self.cache_hits = metrics.cache_hits.labels(**labels)
        self.cache_misses = metrics.cache_misses.labels(**labels)
        self.cache_bytes = metrics.cache_bytes
        self._dropped = metrics.dropped_items
        self._labels = labels
        for reason in ("deadline", "disconnected"):  # exported from the start, so rates read 0
            self._dropped.labels(**labels, reason=reason)

    def dropped(self, reason: str, count: int) -> None:
        self._dropped.labels(**self._labels, reason=reason).inc(count)

    def on_batch(self, report: BatchReport) -> None:
        for wait in report.queue_waits_s:
            self._queue_wait.observe(wait)
        self._inference.observe(report.inference_s)
        self._batch_size.observe(report.size)
        self._batch_tokens.observe(report.padded_tokens)
        self._padding.observe(1 - report.real_tokens / report.padded_tokens)
        self._queue_depth.set(report.queue_depth)

    def on_queue_depth(self, depth: int) -> None:
        self._queue_depth.set(depth)


class DeviceMemoryCollector(Collector):
    """Memory in use on each device a model runs on, read at scrape time. On CUDA it is the
    device's (cudaMemGetInfo: what torch and ONNX Runtime hold, and anything else on that GPU);
    on CPU it is this process's resident memory."""

    def __init__(self) -> None:
        self.devices: set[str] = set()

    def collect(self) -> Iterator[Metric]:
        used = GaugeMetricFamily(
            "rmserve_device_memory_used_bytes", "Memory in use on a device", labels=["device"]
        )
        total = GaugeMetricFamily(
            "rmserve_device_memory_total_bytes", "Memory a device has", labels=["device"]
        )
        for device in sorted(self.devices):
            try:
                in_use, capacity = _memory(device)
            except Exception:  # e.g. onnxruntime-gpu beside a CPU-only torch: no reading, no failed scrape
                continue
            used.add_metric([device], in_use)
            total.add_metric([device], capacity)
        yield used
        yield total


def _memory(device: str) -> tuple[float, float]:
    if device.startswith("cuda"):
        import torch

        free, capacity = torch.cuda.mem_get_info(torch.device(device))
        return capacity - free, capacity
    page = os.sysconf("SC_PAGE_SIZE")
    with open("/proc/self/statm") as statm:
        resident_pages = int(statm.read().split()[1])
    return resident_pages * page, os.sysconf("SC_PHYS_PAGES") * page


class DeviceMemorySampler:
    """An engine process's device memory, written every second (multiprocess mode, where no
    collector runs at scrape time in the process that holds the device)."""

    def __init__(self, metrics: Metrics, every_s: float = 1.0) -> None:
        self._metrics = metrics
        self._every_s = every_s
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Sample the devices the models loaded so far run on (Lifecycle records them)."""
        if self._metrics.multiprocess:
            self._task = asyncio.create_task(self._sample(sorted(self._metrics.device_memory.devices)))

    async def _sample(self, devices: list[str]) -> None:
        while True:
            for device in devices:
                with contextlib.suppress(Exception):  # no reading is no sample, as at scrape time
                    in_use, capacity = _memory(device)
                    self._metrics.device_memory_used.labels(device=device).set(in_use)
                    self._metrics.device_memory_total.labels(device=device).set(capacity)
            await asyncio.sleep(self._every_s)

    def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
