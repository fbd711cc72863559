"""The `invoke` command: images sent to an endpoint (or a container on this machine), top-k labels printed."""
from __future__ import annotations

import argparse
import json
import urllib.error
import urllib.parse
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from byoc_images import IMAGE_EXTENSIONS
from sagemaker_launch import aws
from sagemaker_launch.errors import LaunchError

CONTENT_TYPES = {".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".png": "image/png", ".webp": "image/webp"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("endpoint", help="endpoint name, or the http://host:port of a serving container on this machine")
    parser.add_argument("images", nargs="+", type=Path, help="image files or folders of them")
    parser.add_argument("--target-model", help="multi-model endpoints: which model.tar.gz (relative to the endpoint's S3 prefix)")
    parser.add_argument("--top-k", type=int, default=3, help="labels to print per image")
    parser.add_argument("--workers", type=int, default=4, help="requests in flight at once")


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
        request = {"EndpointName": endpoint, "ContentType": content_type(path), "Accept": "application/json",
                   "CustomAttributes": f"top_k={top_k}", "Body": path.read_bytes()}  # fmt: skip
        if target_model:
            request["TargetModel"] = target_model
        return aws.call(runtime.invoke_endpoint, **request)["Body"].read()

    return send


def local_sender(url: str, target_model: str | None, top_k: int, timeout: float = 60):
    """A function sending one image to a container's /invocations (or its multi-model /models/<name>/invoke)."""
    path_part = f"/models/{urllib.parse.quote(target_model, safe='')}/invoke" if target_model else "/invocations"

    def send(path: Path) -> bytes:
        request = urllib.request.Request(f"{url.rstrip('/')}{path_part}?top_k={top_k}", data=path.read_bytes(), method="POST",
                                         headers={"Content-Type": content_type(path), "Accept": "application/json"})  # fmt: skip
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


def run(args: argparse.Namespace) -> None:
    if not 1 <= args.top_k <= 1000 or args.workers < 1:
        raise LaunchError("--top-k must be 1 to 1000 and --workers at least 1.")
    files = image_files(args.images)
    if args.endpoint.startswith(("http://", "https://")):
        send = local_sender(args.endpoint, args.target_model, args.top_k)
    else:
        send = sagemaker_sender(aws.session(args.region).client("sagemaker-runtime"), args.endpoint, args.target_model, args.top_k)

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
