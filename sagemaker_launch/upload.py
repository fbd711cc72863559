"""The `upload-data` command: a local dataset synced to S3 as training channels, unchanged files skipped."""

from __future__ import annotations

import argparse
import hashlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from boto3.exceptions import S3UploadFailedError
from boto3.s3.transfer import TransferConfig
from tqdm import tqdm

from byoc_images import IMAGE_EXTENSIONS
from sagemaker_launch import aws, validate
from sagemaker_launch.errors import LaunchError

SPLIT_ALIASES = {"train": ("train", "training"), "valid": ("valid", "validation", "val"), "test": ("test", "testing")}
MIB = 1024 * 1024


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "source",
        type=Path,
        help="dataset folder: train/valid/test of class folders, class folders alone, or an HDF5 + CSV pair",
    )
    parser.add_argument("destination", help="s3://bucket/prefix; each split lands in <prefix>/<split>/")
    parser.add_argument(
        "--part-size-mb",
        type=int,
        default=16,
        help="multipart part size (files larger than this go in parts; at least 5)",
    )
    parser.add_argument("--workers", type=int, default=8, help="files uploaded at once")
    parser.add_argument("--create-bucket", action="store_true", help="create the bucket when it does not exist")
    parser.add_argument("--dry-run", action="store_true", help="list what would be uploaded, upload nothing")


def _has_images(folder: Path) -> bool:
    return any(p.suffix.lower() in IMAGE_EXTENSIONS for p in folder.rglob("*") if p.is_file())


def channels(root: Path) -> dict[str, Path]:
    """The channel folders of a dataset, checked the way the trainer will read them."""
    if not root.exists():
        raise LaunchError(f"{root} does not exist.")
    if not root.is_dir():
        raise LaunchError(
            f"{root} is a file; pass the dataset folder (class folders, or train/valid/test folders of them)."
        )
    found = {
        split: root / alias for split, aliases in SPLIT_ALIASES.items() for alias in aliases if (root / alias).is_dir()
    }
    found = found if "train" in found else {"train": root}
    for split, folder in found.items():
        hdf5 = sorted(folder.glob("*.hdf5")) + sorted(folder.glob("*.h5"))
        if hdf5 and not list(folder.glob("*.csv")):
            raise LaunchError(f"{hdf5[0]} needs its CSV of labels (isic_id,target) beside it in {folder}.")
        if not hdf5 and not any(_has_images(p) for p in folder.iterdir() if p.is_dir()):
            raise LaunchError(
                f"{folder} ({split}) holds no images in class folders and no HDF5 + CSV pair; put each class's images "
                "in a folder named after it."
            )
    return found


def s3_etag(path: Path, part_size: int) -> str:
    """The ETag S3 gives this file when uploaded with ``part_size`` parts: its MD5, or the MD5 of the parts' MD5s and
    ``-<parts>``."""
    size = path.stat().st_size
    with path.open("rb") as handle:
        if size < part_size:
            return hashlib.md5(handle.read()).hexdigest()
        digests = [hashlib.md5(chunk).digest() for chunk in iter(lambda: handle.read(part_size), b"")]
    return f"{hashlib.md5(b''.join(digests)).hexdigest()}-{len(digests)}"


def remote_objects(s3, bucket: str, prefix: str) -> dict[str, tuple[int, str]]:
    """Key -> (size, ETag) of everything under the prefix."""
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
    try:
        return {o["Key"]: (o["Size"], o["ETag"].strip('"')) for page in pages for o in page.get("Contents", [])}
    except s3.exceptions.NoSuchBucket:
        return {}


def ensure_bucket(s3, bucket: str, region: str, create: bool) -> None:
    if aws.find(s3.head_bucket, "404", Bucket=bucket) is not None:
        return
    if not create:
        raise LaunchError(f"bucket {bucket} does not exist (or is not yours): create it, or pass --create-bucket.")
    location = {} if region == "us-east-1" else {"CreateBucketConfiguration": {"LocationConstraint": region}}
    aws.call(s3.create_bucket, Bucket=bucket, **location)
    print(f"created bucket s3://{bucket} in {region}")


def run(args: argparse.Namespace) -> None:
    destination = validate.s3_uri(args.destination, "destination")
    if args.part_size_mb < 5 or args.workers < 1:
        raise LaunchError("--part-size-mb must be at least 5 (S3's smallest part) and --workers at least 1.")
    found = channels(args.source)
    bucket, prefix = validate.s3_parts(destination)
    prefix = f"{prefix}/" if prefix else ""
    part_size = args.part_size_mb * MIB
    files = [
        (path, f"{prefix}{split}/{path.relative_to(folder).as_posix()}")
        for split, folder in found.items()
        for path in sorted(folder.rglob("*"))
        if path.is_file() and not any(part.startswith(".") for part in path.relative_to(folder).parts)
    ]
    session = aws.session(args.region)
    s3 = session.client("s3")
    ensure_bucket(s3, bucket, session.region_name, args.create_bucket and not args.dry_run)
    remote = remote_objects(s3, bucket, prefix)
    with ThreadPoolExecutor(args.workers) as pool:
        etags = list(pool.map(lambda item: s3_etag(item[0], part_size), files))
    todo = [
        (path, key, etag)
        for (path, key), etag in zip(files, etags, strict=False)
        if remote.get(key) != (path.stat().st_size, etag)
    ]
    total = sum(path.stat().st_size for path, _, _ in todo)
    print(
        f"{len(files)} files, {len(files) - len(todo)} already in S3 unchanged, {len(todo)} to upload "
        f"({total / MIB:.1f} MiB)"
    )
    if args.dry_run:
        for path, key, _ in todo:
            print(f"  would upload {path} -> s3://{bucket}/{key}")
        return
    if todo:
        _upload(s3, bucket, todo, part_size, args.workers, total)
    for split in found:
        print(f"--channel {split}=s3://{bucket}/{prefix}{split}")


def _upload(s3, bucket: str, todo: list[tuple[Path, str, str]], part_size: int, workers: int, total: int) -> None:
    """Upload files in parallel (each in parts above ``part_size``) under one progress bar of bytes."""
    config = TransferConfig(multipart_threshold=part_size, multipart_chunksize=part_size, max_concurrency=4)
    with tqdm(total=total, unit="B", unit_scale=True, desc="upload") as bar:

        def put(item):
            path, key, _ = item
            try:
                aws.call(s3.upload_file, Filename=str(path), Bucket=bucket, Key=key, Config=config, Callback=bar.update)
            except S3UploadFailedError as exc:
                raise LaunchError(
                    f"uploading {path} to s3://{bucket}/{key} failed: {exc}; run the command again to upload what "
                    "is missing."
                ) from None

        with ThreadPoolExecutor(workers) as pool:
            list(pool.map(put, todo))
