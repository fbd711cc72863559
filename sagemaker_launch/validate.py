"""Checks on arguments made before any AWS call, each failing with what to fix."""
from __future__ import annotations

import re
from pathlib import Path

from sagemaker_launch.errors import LaunchError

INSTANCE_TYPE = re.compile(r"^ml\.[a-z][a-z0-9-]*\.(medium|large|[0-9]*xlarge|metal-[0-9]+xl)$")
ROLE_ARN = re.compile(r"^arn:aws(-[a-z]+)*:iam::[0-9]{12}:role/[\w+=,.@/-]{1,512}$")
ECR_IMAGE = re.compile(r"^(?P<account>[0-9]{12})\.dkr\.ecr\.(?P<region>[a-z0-9-]+)\.amazonaws\.com(\.cn)?/(?P<repository>[a-z0-9._/-]+)(:[\w.-]+|@sha256:[0-9a-f]{64})$")
S3_URI = re.compile(r"^s3://(?P<bucket>[a-z0-9][a-z0-9.-]{1,61}[a-z0-9])(/(?P<key>.*))?$")
IMAGE_TAG = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
JOB_NAME = re.compile(r"^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}$")


def instance_type(value: str) -> str:
    if not INSTANCE_TYPE.match(value):
        raise LaunchError(f"instance type {value!r} is not a SageMaker instance type; use the form ml.<family>.<size>, e.g. ml.g4dn.xlarge.")
    return value


def role(value: str | None) -> str:
    if not value:
        raise LaunchError("no execution role: pass --role arn:aws:iam::<account>:role/<name> (or `role:` in the YAML file, or SAGEMAKER_ROLE).")
    if not ROLE_ARN.match(value):
        raise LaunchError(f"role {value!r} is not an IAM role ARN; expected arn:aws:iam::<12-digit account>:role/<name>.")
    return value


def image_uri(value: str, region: str) -> str:
    """An ECR image URI in ``region``: SageMaker pulls only from ECR, and only in the job's own region."""
    match = ECR_IMAGE.match(value)
    if not match:
        raise LaunchError(f"image {value!r} is not an ECR image URI (<account>.dkr.ecr.<region>.amazonaws.com/<repository>:<tag>); run `push` first.")
    if match["region"] != region:
        raise LaunchError(f"image {value!r} is in {match['region']}, the job runs in {region}: push the image to {region} (`push --region {region}`).")
    return value


def s3_uri(value: str, what: str) -> str:
    if not S3_URI.match(value):
        if Path(value).exists():
            raise LaunchError(f"{what} {value!r} is a local path; upload it first (`upload-data {value} s3://<bucket>/<prefix>`) and pass the s3:// URI.")
        if value.startswith(("/", ".", "file://")):
            raise LaunchError(f"{what} {value!r} does not exist, and SageMaker reads only s3:// URIs.")
        raise LaunchError(f"{what} {value!r} is not an s3://<bucket>/<prefix> URI.")
    return value.rstrip("/")


def image_tag(value: str) -> str:
    if not IMAGE_TAG.match(value):
        raise LaunchError(f"tag {value!r}: use up to 128 letters, digits, '_', '.' and '-', not starting with '.' or '-'.")
    return value


def job_name(value: str) -> str:
    if not JOB_NAME.match(value):
        raise LaunchError(f"name {value!r}: use up to 63 letters, digits and hyphens, starting with a letter or digit.")
    return value


def key_values(pairs: list[str], what: str) -> dict[str, str]:
    """``["a=1", "b=x"]`` -> ``{"a": "1", "b": "x"}``."""
    result = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise LaunchError(f"{what} {pair!r}: write it as NAME=VALUE.")
        result[key] = value
    return result
