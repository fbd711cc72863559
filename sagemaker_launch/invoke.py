"""The `invoke` command: images sent to an endpoint (or a container on this machine), top-k labels printed."""

from __future__ import annotations

import argparse
import json
import time
import urllib.error
import urllib.parse
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from uuid import uuid4

from byoc_images import IMAGE_EXTENSIONS
from sagemaker_launch import aws, validate
from sagemaker_launch.errors import LaunchError

CONTENT_TYPES = {".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".png": "image/png", ".webp": "image/webp"}
ASYNC_INLINE_BYTES = 128_000  # InvokeEndpointAsync takes a body this large inline; larger inputs go through S3


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "endpoint", help="endpoint name, or the http://host:port of a serving container on this machine"
    )
    parser.add_argument("images", nargs="+", type=Path, help="image files or folders of them")
    parser.add_argument(
        "--target-model", help="multi-model endpoints: which model.tar.gz (relative to the endpoint's S3 prefix)"
    )
    parser.add_argument("--top-k", type=int, default=3, help="labels to print per image")
    parser.add_argument("--workers", type=int, default=4, help="requests in flight at once")
    parser.add_argument(
        "--async-input",
        help="asynchronous endpoints: s3:// prefix to upload inputs over 128,000 bytes to (default: inputs/ beside "
        "the endpoint's results)",
    )
    parser.add_argument(
        "--async-timeout",
        type=int,
        default=900,
        help="asynchronous endpoints: seconds the container may take per request (1-3600)",
    )
    parser.add_argument(
        "--wait-seconds",
        type=float,
        default=3600,
        help="asynchronous endpoints: how long to wait for each answer (the queue included)",
    )
    parser.add_argument("--poll-seconds", type=float, default=2, help=argparse.SUPPRESS)


def content_type(path: Path) -> str:
    return CONTENT_TYPES.get(path.suffix.lower(), "application/x-image")


def image_files(paths: list[Path]) -> list[Path]:
    """The files given, and the images inside the folders given, refusing what does not exist."""
    files = []
    for path in paths:
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
            if not found:
                raise LaunchError(f"{path} holds no image files ({', '.join(IMAGE_EXTENSIONS)}).")
            files += found
        elif path.is_file():
            files.append(path)
        else:
            raise LaunchError(f"{path} does not exist.")
    return files


def sagemaker_sender(runtime, endpoint: str, target_model: str | None, top_k: int):
    """A function sending one image through the SageMaker runtime API; returns the response body."""

    def send(path: Path) -> bytes:
        request = {
            "EndpointName": endpoint,
            "ContentType": content_type(path),
            "Accept": "application/json",
            "CustomAttributes": f"top_k={top_k}",
            "Body": path.read_bytes(),
        }
        if target_model:
            request["TargetModel"] = target_model
        return aws.call(runtime.invoke_endpoint, **request)["Body"].read()

    return send


def async_config(client, endpoint: str) -> dict | None:
    """The endpoint's AsyncInferenceConfig, or None for a real-time endpoint."""
    described = aws.call(client.describe_endpoint, EndpointName=endpoint)
    return aws.call(client.describe_endpoint_config, EndpointConfigName=described["EndpointConfigName"]).get(
        "AsyncInferenceConfig"
    )


def input_prefix(config: dict, given: str | None) -> tuple[str, str]:
    """(bucket, key prefix) for inputs: --async-input, else ``inputs`` beside the endpoint's result prefix."""
    if given:
        return validate.s3_parts(validate.s3_uri(given, "--async-input"))
    bucket, key = validate.s3_parts(config["OutputConfig"]["S3OutputPath"])
    parent = key.rstrip("/").rpartition("/")[0]
    return bucket, f"{parent}/inputs" if parent else "inputs"


def wait_for_answer(s3, output: str, failure: str | None, wait_seconds: float, poll_seconds: float) -> bytes:
    """The result object's bytes once the endpoint writes it; its failure object becomes a LaunchError."""
    deadline = time.monotonic() + wait_seconds
    while True:
        for location, failed in ((output, False), (failure, True)):
            if not location:
                continue
            bucket, key = validate.s3_parts(location)
            if aws.find(s3.head_object, "404", Bucket=bucket, Key=key) is not None:
                body = aws.call(s3.get_object, Bucket=bucket, Key=key)["Body"].read()
                if failed:
                    raise LaunchError(
                        f"the endpoint could not answer ({location}): {body[:500].decode(errors='replace')}"
                    )
                return body
        if time.monotonic() > deadline:
            raise LaunchError(f"no answer after {wait_seconds:g} s; it may still come to {output} (or {failure}).")
        time.sleep(poll_seconds)


def async_sender(session, endpoint: str, config: dict, args: argparse.Namespace):
    """A function sending one image through InvokeEndpointAsync (inline up to 128,000 bytes, else uploaded to S3),
    then waiting for its result or failure object; returns the answer's bytes."""
    runtime, s3 = session.client("sagemaker-runtime"), session.client("s3")
    bucket, prefix = input_prefix(config, args.async_input)

    def send(path: Path) -> bytes:
        data = path.read_bytes()
        request = {
            "EndpointName": endpoint,
            "ContentType": content_type(path),
            "Accept": "application/json",
            "CustomAttributes": f"top_k={args.top_k}",
            "InvocationTimeoutSeconds": args.async_timeout,
        }
        if len(data) <= ASYNC_INLINE_BYTES:
            request["Body"] = data
        else:
            key = f"{prefix}/{uuid4().hex}-{path.name}"
            aws.call(s3.put_object, Bucket=bucket, Key=key, Body=data, ContentType=request["ContentType"])
            request["InputLocation"] = f"s3://{bucket}/{key}"
        answer = aws.call(runtime.invoke_endpoint_async, **request)
        return wait_for_answer(
            s3, answer["OutputLocation"], answer.get("FailureLocation"), args.wait_seconds, args.poll_seconds
        )

    return send


def local_sender(url: str, target_model: str | None, top_k: int, timeout: float = 60):
    """A function sending one image to a container's /invocations (or its multi-model /models/<name>/invoke)."""
    path_part = f"/models/{urllib.parse.quote(target_model, safe='')}/invoke" if target_model else "/invocations"

    def send(path: Path) -> bytes:
        request = urllib.request.Request(
            f"{url.rstrip('/')}{path_part}?top_k={top_k}",
            data=path.read_bytes(),
            method="POST",
            headers={"Content-Type": content_type(path), "Accept": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                return response.read()
        except urllib.error.HTTPError as exc:
            raise LaunchError(f"{exc.code}: {exc.read().decode(errors='replace')[:500]}") from None
        except OSError as exc:
            raise LaunchError(f"cannot reach {url}: {exc}") from None

    return send


def describe(body: bytes, top_k: int) -> str:
    """``label (probability), ...`` from our JSON answer."""
    try:
        prediction = json.loads(body)["predictions"][0]
        return ", ".join(f"{r['label']} ({r['probability']:.3f})" for r in prediction["top_k"][:top_k])
    except (ValueError, KeyError, IndexError, TypeError):
        raise LaunchError(f"the endpoint's answer is not byoc-vision's JSON: {body[:200]!r}") from None


def sender(args: argparse.Namespace):
    """The function that sends one image where ``args.endpoint`` says: a local container, or a real-time or asynchronous
    endpoint."""
    if args.endpoint.startswith(("http://", "https://")):
        return local_sender(args.endpoint, args.target_model, args.top_k)
    session = aws.session(args.region)
    config = async_config(session.client("sagemaker"), args.endpoint)
    if config is None:
        return sagemaker_sender(session.client("sagemaker-runtime"), args.endpoint, args.target_model, args.top_k)
    if args.target_model:
        raise LaunchError(
            f"{args.endpoint} is asynchronous, and asynchronous endpoints serve one model: leave out --target-model."
        )
    print(
        f"{args.endpoint} is asynchronous: each image is queued with InvokeEndpointAsync and its answer read from S3",
        flush=True,
    )
    return async_sender(session, args.endpoint, config, args)


def run(args: argparse.Namespace) -> None:
    if not 1 <= args.top_k <= 1000 or args.workers < 1 or not 1 <= args.async_timeout <= 3600:
        raise LaunchError("--top-k must be 1 to 1000, --workers at least 1 and --async-timeout 1 to 3600.")
    files = image_files(args.images)
    send = sender(args)

    def one(path: Path) -> tuple[Path, str | None, str | None]:
        try:
            return path, describe(send(path), args.top_k), None
        except LaunchError as exc:
            return path, None, str(exc)

    failed = 0
    with ThreadPoolExecutor(args.workers) as pool:
        for path, labels, error in pool.map(one, files):
            if error:
                failed += 1
                print(f"{path}: error: {error}", flush=True)
            else:
                print(f"{path}: {labels}", flush=True)
    if failed:
        raise LaunchError(f"{failed} of {len(files)} images failed (their lines above say why).")
