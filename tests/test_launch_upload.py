"""`upload-data` against moto_server's S3: channels laid out as the trainer reads them, unchanged files skipped,
multipart ETags."""

import shutil

import boto3
import h5py
import numpy as np
import pytest
from aws_stand_in import environment, run_cli

from sagemaker_launch import upload

REGION = "us-east-1"


@pytest.fixture(scope="module")
def aws(aws):
    """conftest's moto_server, with what this module's tests start from."""
    boto3.client("s3", region_name=REGION).create_bucket(Bucket="byoc-data")
    yield aws


def listing(prefix: str) -> dict[str, dict]:
    pages = (
        boto3.client("s3", region_name=REGION)
        .get_paginator("list_objects_v2")
        .paginate(Bucket="byoc-data", Prefix=prefix)
    )
    return {o["Key"]: o for page in pages for o in page.get("Contents", [])}


def test_splits_upload_once_then_only_what_changed(aws, fashion, tmp_path, capsys):
    data = shutil.copytree(fashion, tmp_path / "fashion")
    (data / "train" / "Bag" / ".DS_Store").write_bytes(b"finder noise")
    files = sorted(p for p in data.rglob("*.png"))
    code, out, err = run_cli(["upload-data", str(data), "s3://byoc-data/fashion", "--region", REGION], capsys)
    assert code == 0, err
    assert f"{len(files)} files, 0 already in S3 unchanged, {len(files)} to upload" in out
    for split in ("train", "valid", "test"):
        assert f"--channel {split}=s3://byoc-data/fashion/{split}" in out
    objects = listing("fashion/")
    assert set(objects) == {f"fashion/{p.relative_to(data).as_posix()}" for p in files}
    sample = files[0]
    assert objects[f"fashion/{sample.relative_to(data).as_posix()}"]["Size"] == sample.stat().st_size
    body = (
        boto3.client("s3", region_name=REGION)
        .get_object(Bucket="byoc-data", Key=f"fashion/{sample.relative_to(data).as_posix()}")["Body"]
        .read()
    )
    assert body == sample.read_bytes()

    code, out, _ = run_cli(["upload-data", str(data), "s3://byoc-data/fashion", "--region", REGION], capsys)
    assert code == 0 and f"{len(files)} files, {len(files)} already in S3 unchanged, 0 to upload" in out

    files[3].write_bytes(files[4].read_bytes())  # same path, new content
    code, out, _ = run_cli(
        ["upload-data", str(data), "s3://byoc-data/fashion", "--region", REGION, "--dry-run"], capsys
    )
    assert code == 0 and "1 to upload" in out and f"would upload {files[3]}" in out
    code, out, _ = run_cli(["upload-data", str(data), "s3://byoc-data/fashion", "--region", REGION], capsys)
    assert code == 0 and f"{len(files) - 1} already in S3 unchanged, 1 to upload" in out
    assert listing("fashion/")[f"fashion/{files[3].relative_to(data).as_posix()}"]["Size"] == files[4].stat().st_size


def test_hdf5_layout_goes_up_in_parts_and_is_skipped_by_its_multipart_etag(aws, tmp_path, capsys):
    root = tmp_path / "isic"
    root.mkdir()
    with h5py.File(root / "train-image.hdf5", "w") as handle:
        handle.create_dataset(
            "ISIC_0000001", data=np.random.default_rng(0).integers(0, 255, 12 * 1024 * 1024, dtype=np.uint8)
        )
    (root / "train-metadata.csv").write_text("isic_id,target\nISIC_0000001,0\n")
    code, out, err = run_cli(
        ["upload-data", str(root), "s3://byoc-data/isic", "--region", REGION, "--part-size-mb", "5"], capsys
    )
    assert code == 0, err
    assert "--channel train=s3://byoc-data/isic/train" in out
    etag = listing("isic/")["isic/train/train-image.hdf5"]["ETag"].strip('"')
    assert etag.endswith("-3") and etag == upload.s3_etag(root / "train-image.hdf5", 5 * 1024 * 1024)
    code, out, _ = run_cli(
        ["upload-data", str(root), "s3://byoc-data/isic", "--region", REGION, "--part-size-mb", "5"], capsys
    )
    assert code == 0 and "2 files, 2 already in S3 unchanged, 0 to upload" in out


def test_missing_bucket_is_refused_or_created(aws, fashion, capsys):
    code, _, err = run_cli(
        ["upload-data", str(fashion / "valid"), "s3://byoc-missing/valid", "--region", REGION], capsys
    )
    assert code == 2 and "bucket byoc-missing does not exist" in err and "--create-bucket" in err
    code, out, err = run_cli(
        ["upload-data", str(fashion / "valid"), "s3://byoc-missing/v", "--region", REGION, "--create-bucket"], capsys
    )
    assert code == 0, err
    assert "created bucket s3://byoc-missing" in out and "--channel train=s3://byoc-missing/v/train" in out


@pytest.mark.parametrize(
    "layout, message",
    [
        ("missing", "does not exist"),
        ("file", "is a file; pass the dataset folder"),
        ("empty", "holds no images in class folders and no HDF5 + CSV pair"),
        ("hdf5-alone", "needs its CSV of labels"),
        ("split-without-images", "(valid) holds no images"),
    ],
)
def test_bad_datasets_are_refused_before_any_aws_call(layout, message, tmp_path, fashion, capsys):
    root = tmp_path / "data"
    if layout == "file":
        root.write_text("not a folder")
    elif layout == "empty":
        (root / "cats").mkdir(parents=True)
    elif layout == "hdf5-alone":
        root.mkdir()
        (root / "train.hdf5").write_bytes(b"\x89HDF")
    elif layout == "split-without-images":
        shutil.copytree(fashion / "train", root / "train")
        (root / "valid" / "Bag").mkdir(parents=True)
    with environment({"AWS_ENDPOINT_URL": "http://127.0.0.1:9"}):
        code, _, err = run_cli(["upload-data", str(root), "s3://byoc-data/x", "--region", REGION], capsys)
    assert code == 2 and message in err


def test_bad_destination_and_part_size(tmp_path, fashion, capsys):
    code, _, err = run_cli(["upload-data", str(fashion), str(tmp_path), "--region", REGION], capsys)
    assert code == 2 and "is a local path" in err
    code, _, err = run_cli(
        ["upload-data", str(fashion), "s3://byoc-data/x", "--part-size-mb", "4", "--region", REGION], capsys
    )
    assert code == 2 and "at least 5" in err
