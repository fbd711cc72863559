"""Back-pressure and time limits, enforced once for every front: requests in flight, images admitted, and one
deadline per request that covers reading, fetching, decoding and predicting."""

from __future__ import annotations

import contextlib
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor

from serve.http_common import RequestError

RETRY_AFTER_SECONDS = "1"
WORKER_NICENESS = 10  # decoding and prediction yield the CPU to the event loop, which answers /ping and reads bodies


def lower_priority() -> None:
    """Lower the calling thread's CPU priority (Linux schedules threads one by one; elsewhere this does nothing)."""
    with contextlib.suppress(AttributeError, OSError):
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), WORKER_NICENESS)


def worker_pool(threads: int, name: str) -> ThreadPoolExecutor:
    """Threads for the heavy steps, at a lower priority than the event loop, so health checks are never starved."""
    return ThreadPoolExecutor(threads, thread_name_prefix=name, initializer=lower_priority)


class Deadline:
    """The moment a request must be answered by (``seconds`` after ``start``, by default now); ``check`` raises 504
    once it has passed."""

    def __init__(self, seconds: float, start: float | None = None):
        self.seconds = seconds
        self.at = (time.monotonic() if start is None else start) + seconds

    def remaining(self) -> float:
        return max(0.0, self.at - time.monotonic())

    def check(self) -> None:
        if time.monotonic() >= self.at:
            raise self.expired()

    def expired(self) -> RequestError:
        return RequestError(
            504, "timeout", f"The request took longer than {self.seconds:g} s (SAGEMAKER_MODEL_SERVER_TIMEOUT)."
        )


def busy(what: str) -> RequestError:
    return RequestError(
        503,
        "busy",
        f"The server is at its limit of {what}; retry after a second.",
        {"Retry-After": RETRY_AFTER_SECONDS},
    )


class Admission:
    """At most ``max_requests`` requests in flight and ``max_images`` images admitted (decoded or queued) at once.

    Thread-safe: requests enter on the event loop, images are counted in decoding threads.
    """

    def __init__(self, max_requests: int, max_images: int):
        self.max_requests, self.max_images = max_requests, max_images
        self.requests = self.images = 0
        self.lock = threading.Lock()

    def enter(self) -> Ticket:
        """A ticket for one request; 503 with Retry-After when ``max_requests`` are in flight."""
        with self.lock:
            if self.requests >= self.max_requests:
                raise busy(f"{self.max_requests} concurrent requests (SERVE_MAX_CONCURRENT_REQUESTS)")
            self.requests += 1
        return Ticket(self)

    def _reserve(self, count: int) -> None:
        with self.lock:
            if self.images + count > self.max_images:
                raise busy(f"{self.max_images} queued images (SERVE_MAX_QUEUED_IMAGES)")
            self.images += count

    def _release(self, images: int) -> None:
        with self.lock:
            self.requests -= 1
            self.images -= images


class Ticket:
    """One admitted request: reserves its images once they are counted, gives everything back on ``close``."""

    def __init__(self, admission: Admission):
        self.admission, self.images, self.closed = admission, 0, False

    def reserve(self, count: int) -> None:
        self.admission._reserve(count)
        self.images += count

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.admission._release(self.images)

    def __enter__(self) -> Ticket:
        return self

    def __exit__(self, *_exc) -> None:
        self.close()


class Uploads:
    """Bodies still arriving: at most ``max_count`` at once, holding at most ``max_bytes`` together. Kept apart from
    ``Admission``, so clients that stall mid-body hold no inference slot."""

    def __init__(self, max_count: int, max_bytes: int):
        self.max_count, self.max_bytes = max_count, max_bytes
        self.count = self.bytes = 0

    def enter(self) -> Upload:
        """An upload slot (event loop only); 503 with Retry-After when ``max_count`` bodies are arriving."""
        if self.count >= self.max_count:
            raise busy(f"{self.max_count} bodies arriving at once (SERVE_MAX_CONCURRENT_UPLOADS)")
        self.count += 1
        return Upload(self)


class Upload:
    """One body being read: counts its bytes against the shared budget, gives them back on exit."""

    def __init__(self, uploads: Uploads):
        self.uploads, self.bytes = uploads, 0

    def grow(self, count: int) -> None:
        if self.uploads.bytes + count > self.uploads.max_bytes:
            raise busy(f"{self.uploads.max_bytes >> 20} MB of bodies arriving at once (SERVE_MAX_UPLOAD_BUFFER_MB)")
        self.uploads.bytes += count
        self.bytes += count

    def __enter__(self) -> Upload:
        return self

    def __exit__(self, *_exc) -> None:
        self.uploads.count -= 1
        self.uploads.bytes -= self.bytes
