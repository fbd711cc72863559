"""Prometheus metrics of one server: requests by status and content type, latency, batch sizes, load time, and
where an image's time goes (decoding + preprocessing against the model run)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from serve.decode import SUPPORTED, media_type

LATENCY_BUCKETS = (0.005, 0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)
STAGE_BUCKETS = (0.001, 0.002, 0.004, 0.008, 0.016, 0.032, 0.064, 0.128, 0.256, 0.512, 1.024, 2.048)
STAGES = ("decode", "model")  # decode: request bytes -> network input (decoding, resizing, normalising); model: the run


class Metrics:
    def __init__(self):
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "byoc_requests",
            "Invocations by HTTP status and content type",
            ["status", "content_type"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "byoc_request_seconds", "Invocation latency", buckets=LATENCY_BUCKETS, registry=self.registry
        )
        self.batch = Histogram(
            "byoc_batch_images",
            "Images per model run (after dynamic batching)",
            buckets=BATCH_BUCKETS,
            registry=self.registry,
        )
        self.load = Gauge(
            "byoc_model_load_seconds", "Time to load the model and run the warm-up inference", registry=self.registry
        )
        self.stage = Histogram(
            "byoc_stage_seconds_per_image",
            "Seconds per image in each stage (count: images; sum: seconds)",
            ["stage"],
            buckets=STAGE_BUCKETS,
            registry=self.registry,
        )

    def observe_stage(self, stage: str, seconds: float, images: int) -> None:
        """``images`` images took ``seconds`` together in ``stage``: each is counted once, with its share."""
        histogram = self.stage.labels(stage)
        for _ in range(images):
            histogram.observe(seconds / images)

    def observe_request(self, status: int, content_type: str | None, seconds: float) -> None:
        kind = media_type(content_type)
        self.requests.labels(str(status), kind if kind in SUPPORTED else "other").inc()
        self.latency.observe(seconds)

    def render(self) -> bytes:
        return generate_latest(self.registry)
