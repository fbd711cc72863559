"""Graceful shutdown as SageMaker stops a container (SIGTERM, then SIGKILL 30 s later): on SIGTERM the server stops
admitting (503 with Retry-After), answers the requests already in, then exits 0, within a bounded grace period."""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import time
from contextlib import contextmanager

import uvicorn

from serve.http_common import RequestError

log = logging.getLogger("serve")


class Drain:
    """Requests in progress, and whether the server has stopped admitting new ones. One per process: the server
    (``DrainingServer``) starts it on SIGTERM, the fronts consult it for every request."""

    def __init__(self) -> None:
        self.active = 0
        self.since: float | None = None

    @property
    def draining(self) -> bool:
        return self.since is not None

    def begin(self) -> None:
        if self.since is None:
            self.since = time.monotonic()

    @contextmanager
    def request(self):
        """Counts one request in progress; 503 with Retry-After once draining (the client retries another host)."""
        if self.draining:
            raise RequestError(
                503,
                "shutting down",
                "This server is shutting down; retry, and the request goes to another instance.",
                {"Retry-After": "1", "Connection": "close"},
            )
        self.active += 1
        try:
            yield
        finally:
            self.active -= 1


DRAIN = Drain()


class DrainingServer(uvicorn.Server):
    """uvicorn's server, with SIGTERM draining first: it waits until no request is in progress or ``grace`` seconds
    have passed, then shuts down as usual (its ``timeout_graceful_shutdown`` bounds the rest) and exits 0."""

    def __init__(self, config: uvicorn.Config, grace: float):
        super().__init__(config)
        self.grace = grace

    def handle_exit(self, sig: int, frame) -> None:
        if sig == signal.SIGTERM and not self.should_exit:
            if not DRAIN.draining:
                log.info(
                    "SIGTERM: no longer admitting requests; finishing %d in progress (at most %g s)",
                    DRAIN.active,
                    self.grace,
                )
            DRAIN.begin()
            return
        super().handle_exit(sig, frame)

    async def on_tick(self, counter: int) -> bool:
        if DRAIN.draining and not self.should_exit:
            waited = time.monotonic() - DRAIN.since
            if DRAIN.active == 0 or waited >= self.grace:
                log.info("drained in %.1f s (%d request(s) still in progress); shutting down", waited, DRAIN.active)
                self.should_exit = True
        return await super().on_tick(counter)


def run_worker(config: uvicorn.Config, grace: float, sockets: list) -> None:
    """One worker process of ``run_workers`` (a module-level function: spawned workers import it by name)."""
    config.configure_logging()  # a spawned process starts without the parent's logging
    DrainingServer(config, grace).run(sockets)


def run_workers(config: uvicorn.Config, grace: float, count: int) -> None:
    """``count`` worker processes on one listening socket; SIGTERM is passed on to each (each drains), and this
    process exits once they have all exited."""
    sock = config.bind_socket()
    spawn = multiprocessing.get_context("spawn")
    workers = [spawn.Process(target=run_worker, args=(config, grace, [sock]), name=f"worker-{n}") for n in range(count)]
    for worker in workers:
        worker.start()
    signal.signal(signal.SIGTERM, lambda *_: [w.terminate() for w in workers if w.is_alive()])
    signal.signal(signal.SIGINT, lambda *_: [os.kill(w.pid, signal.SIGINT) for w in workers if w.is_alive()])
    for worker in workers:
        worker.join()
