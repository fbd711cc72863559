"""``python -m bench soak``: the serving container at saturation for 10 minutes, inside a memory limit, with good
JPEGs and the test suite's bad and hostile bodies (``tests/hostile_inputs.py``) mixed in, plus stalled uploads.

The ResNet-50 artifact of ``bench serve``; the load comes from another process on 127.0.0.1 (good clients posting
back to back, bad clients cycling through the catalogue); this process polls ``/ping`` every 50 ms and samples the
container's memory every 5 s. Reported: requests by status, unexpected 5xx (any 5xx but a 503 with Retry-After),
/ping p99 and worst, memory at minute 1 and at the end, and good images/s in the first and last minute.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import http.client
import multiprocessing
import os
import socket
import subprocess
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

from bench.machine import describe
from bench.photos import jpeg_photos
from bench.report import save
from bench.serve_http import make_artifact, start, stop

CLIENT_NICENESS = 10
Outcome = tuple[float, str, int, bool]  # (seconds since start, kind, status, Retry-After present)


def post(port: int, body: bytes, content_type: str | None) -> tuple[int, bool]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    try:
        connection.request(
            "POST", "/invocations", body=body, headers={"Content-Type": content_type} if content_type else {}
        )
        response = connection.getresponse()
        response.read()
        return response.status, response.getheader("Retry-After") is not None
    finally:
        connection.close()


def stalled_upload(port: int) -> tuple[int, bool]:
    """Headers announcing 1 MB, 100 bytes of it, then silence: the server must answer 408 and hang up."""
    with socket.create_connection(("127.0.0.1", port), timeout=120) as sock:
        sock.sendall(
            b"POST /invocations HTTP/1.1\r\nHost: soak\r\nContent-Type: image/jpeg\r\nContent-Length: 1000000\r\n\r\n"
            + b"\xff" * 100
        )
        status_line = sock.recv(4096).split(b"\r\n", 1)[0].split()
    return (int(status_line[1]) if len(status_line) > 1 else 0), False


def load(port: int, seconds: float, good_clients: int, bad_clients: int) -> list[Outcome]:
    """The load generator (runs in its own process, at a lower CPU priority: on SageMaker the clients are other
    machines, here they share the server's cores); returns one outcome per request."""
    import hostile_inputs

    os.nice(CLIENT_NICENESS)
    photos = [body for body, _ in jpeg_photos(64, 384)]
    truncated = photos[0][: len(photos[0]) // 3]
    bad = [
        (name, truncated if body is None else body, content_type)
        for name, body, content_type, _, _ in hostile_inputs.BAD
    ]
    outcomes: list[Outcome] = []
    started = time.perf_counter()
    until = started + seconds

    def good(offset: int) -> None:
        n = offset
        while time.perf_counter() < until:
            status, retry = post(port, photos[n % len(photos)], "image/jpeg")
            outcomes.append((time.perf_counter() - started, "good", status, retry))
            n += good_clients

    def hostile(offset: int) -> None:
        n = offset
        while time.perf_counter() < until:
            name, body, content_type = bad[n % len(bad)]
            status, retry = post(port, body, content_type)
            outcomes.append((time.perf_counter() - started, name, status, retry))
            n += 1

    def stalling() -> None:
        while time.perf_counter() < until:
            status, retry = stalled_upload(port)
            outcomes.append((time.perf_counter() - started, "stalled upload", status, retry))

    with concurrent.futures.ThreadPoolExecutor(good_clients + bad_clients + 1) as pool:
        jobs = (
            [pool.submit(good, i) for i in range(good_clients)]
            + [pool.submit(hostile, i) for i in range(bad_clients)]
            + [pool.submit(stalling)]
        )
        for job in jobs:
            job.result()
    return outcomes


def memory_mb(name: str) -> float:
    usage = subprocess.run(
        ["docker", "stats", "--no-stream", "--format", "{{.MemUsage}}", name],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    value = usage.split("/")[0].strip()
    for unit, factor in (("KiB", 1 / 1024), ("MiB", 1), ("GiB", 1024)):
        if value.endswith(unit):
            return round(float(value[: -len(unit)]) * factor, 1)
    raise ValueError(f"docker stats said {usage!r}")


def watch_ping(port: int, until: float, started: float, pings: list[tuple[float, float]]) -> None:
    """/ping every 50 ms until ``until``: (seconds since ``started``, latency; inf when not 200)."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    while time.perf_counter() < until:
        sent = time.perf_counter()
        connection.request("GET", "/ping")
        response = connection.getresponse()
        response.read()
        pings.append((sent - started, time.perf_counter() - sent if response.status == 200 else float("inf")))
        time.sleep(0.05)


def watch_memory(name: str, until: float, started: float, memory: list[tuple[float, float]]) -> None:
    """The container's memory every 5 s until ``until`` (docker stats takes a second or two: its own thread)."""
    while time.perf_counter() < until:
        memory.append((time.perf_counter() - started, memory_mb(name)))
        time.sleep(max(0.0, 5 - (time.perf_counter() - started - memory[-1][0])))


def summarize(
    outcomes: list[Outcome], pings: list[tuple[float, float]], memory: list[tuple[float, float]], seconds: float
) -> dict:
    by_status = Counter(str(status) for _, _, status, _ in outcomes)
    unexpected = [
        (kind, status) for _, kind, status, retry in outcomes if status >= 500 and not (status == 503 and retry)
    ]
    good = sorted(t for t, kind, status, _ in outcomes if kind == "good" and status == 200)
    bad_5xx = [(kind, status) for _, kind, status, _ in outcomes if kind != "good" and status >= 500]
    latencies = sorted(latency for _, latency in pings)
    minute = min(60.0, seconds / 2)
    first_rate = sum(1 for t in good if t < minute) / minute
    last_rate = sum(1 for t in good if t >= seconds - minute) / minute
    at_one = next(m for t, m in memory if t >= minute) if any(t >= minute for t, _ in memory) else memory[0][1]
    return {
        "requests": len(outcomes),
        "by_status": dict(sorted(by_status.items())),
        "by_kind": {
            kind: dict(Counter(str(s) for _, k, s, _ in outcomes if k == kind))
            for kind in sorted({k for _, k, _, _ in outcomes})
        },
        "unexpected_5xx": len(unexpected),
        "unexpected_examples": [f"{kind}: {status}" for kind, status in unexpected[:5]],
        "bad_inputs_answered_5xx": len(bad_5xx),
        "ping": {
            "count": len(latencies),
            "p50_ms": round(1000 * latencies[len(latencies) // 2], 1),
            "p99_ms": round(1000 * latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))], 1),
            "worst_ms": round(1000 * latencies[-1], 1),
        },
        "memory_mb": {
            "at_minute_1": at_one,
            "at_end": memory[-1][1],
            "peak": max(m for _, m in memory),
            "growth_pct": round(100 * (memory[-1][1] / at_one - 1), 1),
        },
        "good_images_per_sec": {
            "first_minute": round(first_rate, 1),
            "last_minute": round(last_rate, 1),
            "drift_pct": round(100 * (last_rate / first_rate - 1), 1) if first_rate else None,
        },
        "minute_seconds": minute,
        "timeline": timeline(good, pings, memory, seconds),
    }


def timeline(
    good: list[float],
    pings: list[tuple[float, float]],
    memory: list[tuple[float, float]],
    seconds: float,
    step: float = 10,
) -> list[dict]:
    """Per ``step`` seconds: good images/s, /ping p99 (ms) and the last memory sample (MB)."""
    rows = []
    for begin in range(0, int(seconds), int(step)):
        window = sorted(latency for t, latency in pings if begin <= t < begin + step) or [0.0]
        sampled = [m for t, m in memory if t < begin + step]
        rows.append(
            {
                "t": begin,
                "images_per_sec": round(sum(1 for t in good if begin <= t < begin + step) / step, 1),
                "ping_p99_ms": round(1000 * window[min(len(window) - 1, int(0.99 * len(window)))], 1),
                "memory_mb": sampled[-1] if sampled else None,
            }
        )
    return rows


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(
        prog="python -m bench soak", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--image", default="byoc-vision-serve:bench", help="our serving image")
    parser.add_argument("--seconds", type=float, default=600, help="how long the load runs (10 minutes by default)")
    parser.add_argument("--memory", default="2g", help="the container's memory limit (docker run --memory)")
    parser.add_argument("--good-clients", type=int, default=16, help="clients posting good JPEGs back to back")
    parser.add_argument("--bad-clients", type=int, default=4, help="clients cycling through the bad and hostile bodies")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        model = make_artifact(Path(tmp))
        name, port, cold = start(
            args.image, model, {}, ["serve"], ("--memory", args.memory, "--memory-swap", args.memory)
        )
        try:
            pings: list[tuple[float, float]] = []
            memory: list[tuple[float, float]] = []
            with concurrent.futures.ProcessPoolExecutor(
                1, mp_context=multiprocessing.get_context("spawn")
            ) as other:  # no fork of a threaded process
                loading = other.submit(load, port, args.seconds, args.good_clients, args.bad_clients)
                started = time.perf_counter()
                watchers = [
                    threading.Thread(
                        target=watch_ping, args=(port, started + args.seconds, started, pings), daemon=True
                    ),
                    threading.Thread(
                        target=watch_memory, args=(name, started + args.seconds, started, memory), daemon=True
                    ),
                ]
                for watcher in watchers:
                    watcher.start()
                outcomes = loading.result()
            for watcher in watchers:
                watcher.join()
            still_serving = post(port, jpeg_photos(1, 384)[0][0], "image/jpeg")[0] == 200
            oom_killed = '"OOMKilled":true' in subprocess.run(
                ["docker", "inspect", name], capture_output=True, text=True
            ).stdout.replace(" ", "")
        finally:
            stop(name)
    report = {
        "machine": describe(),
        "image": args.image,
        "model": "resnet50 (224 px crop of a 256 px resize), 10 classes; 384 px JPEG bodies",
        "seconds": args.seconds,
        "memory_limit": args.memory,
        "clients": {"good": args.good_clients, "bad": args.bad_clients, "stalled uploads": 1},
        "cold_start_seconds": round(cold, 2),
        **summarize(outcomes, pings, memory, args.seconds),
        "still_serving_after": still_serving,
        "oom_killed": oom_killed,
    }
    save("soak.json", report)
    print(
        f"soak {args.seconds:.0f} s: {report['requests']} requests {report['by_status']}; unexpected 5xx "
        f"{report['unexpected_5xx']}; "
        f"/ping p99 {report['ping']['p99_ms']} ms, worst {report['ping']['worst_ms']} ms; memory "
        f"{report['memory_mb']}; good images/s {report['good_images_per_sec']}"
    )
    return report


if __name__ == "__main__":
    main()
