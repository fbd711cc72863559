"""Checks on arguments made before any AWS call, each failing with what to fix."""

from __future__ import annotations

import re
from pathlib import Path

from sagemaker_launch.errors import LaunchError

INSTANCE_TYPE = re.compile(r"^ml\.[a-z][a-z0-9-]*\.(medium|large|[0-9]*xlarge|metal-[0-9]+xl)$")
ROLE_ARN = re.compile(r"^arn:aws(-[a-z]+)*:iam::[0-9]{12}:role/[\w+=,.@/-]{1,512}$")
ECR_IMAGE = re.compile(
    r"^(?P<account>[0-9]{12})\.dkr\.ecr\.(?P<region>[a-z0-9-]+)\.amazonaws\.com(\.cn)?/"
    r"(?P<repository>[a-z0-9._/-]+)(:[\w.-]+|@sha256:[0-9a-f]{64})$"
)
S3_URI = re.compile(r"^s3://(?P<bucket>[a-z0-9][a-z0-9.-]{1,61}[a-z0-9])(/(?P<key>.*))?$")
IMAGE_TAG = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
ECR_HOST = re.compile(r"^[0-9]{12}\.dkr\.ecr(-fips)?\.[a-z0-9-]+\.amazonaws\.com(\.cn)?$")
LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "::1")
JOB_NAME = re.compile(r"^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}$")


def instance_type(value: str) -> str:
    if not INSTANCE_TYPE.match(value):
        raise LaunchError(
            f"instance type {value!r} is not a SageMaker instance type; use the form ml.<family>.<size>, e.g. "
            "ml.g4dn.xlarge."
        )
    return value


def role(value: str | None) -> str:
    if not value:
        raise LaunchError(
            "no execution role: pass --role arn:aws:iam::<account>:role/<name> (or `role:` in the YAML file, or "
            "SAGEMAKER_ROLE)."
        )
    if not ROLE_ARN.match(value):
        raise LaunchError(
            f"role {value!r} is not an IAM role ARN; expected arn:aws:iam::<12-digit account>:role/<name>."
        )
    return value


def image_uri(value: str, region: str) -> str:
    """An ECR image URI in ``region``: SageMaker pulls only from ECR, and only in the job's own region."""
    match = ECR_IMAGE.match(value)
    if not match:
        raise LaunchError(
            f"image {value!r} is not an ECR image URI (<account>.dkr.ecr.<region>.amazonaws.com/<repository>:<tag>); "
            "run `push` first."
        )
    if match["region"] != region:
        raise LaunchError(
            f"image {value!r} is in {match['region']}, the job runs in {region}: push the image to {region} (`push "
            f"--region {region}`)."
        )
    return value


def s3_uri(value: str, what: str) -> str:
    if not S3_URI.match(value):
        if Path(value).exists():
            raise LaunchError(
                f"{what} {value!r} is a local path; upload it first (`upload-data {value} s3://<bucket>/<prefix>`) "
                "and pass the s3:// URI."
            )
        if value.startswith(("/", ".", "file://")):
            raise LaunchError(f"{what} {value!r} does not exist, and SageMaker reads only s3:// URIs.")
        raise LaunchError(f"{what} {value!r} is not an s3://<bucket>/<prefix> URI.")
    return value.rstrip("/")


def s3_parts(uri: str) -> tuple[str, str]:
    """``s3://bucket/key`` -> (bucket, key)."""
    bucket, _, key = s3_uri(uri, "S3 URI").removeprefix("s3://").partition("/")
    return bucket, key


def image_tag(value: str) -> str:
    if not IMAGE_TAG.match(value):
        raise LaunchError(
            f"tag {value!r}: use up to 128 letters, digits, '_', '.' and '-', not starting with '.' or '-'."
        )
    return value


NAME_PREFIX = "byoc-"  # the IAM policy in docs/sagemaker.md lets the launcher tag and delete only resources named so


def job_name(value: str, limit: int = 63) -> str:
    """A name for what the launcher creates: letters, digits and hyphens, starting with ``byoc-``."""
    if not JOB_NAME.match(value) or len(value) > limit:
        raise LaunchError(
            f"name {value!r}: use up to {limit} letters, digits and hyphens, starting with {NAME_PREFIX}."
        )
    if not value.startswith(NAME_PREFIX):
        raise LaunchError(
            f"name {value!r}: names start with {NAME_PREFIX} (e.g. {NAME_PREFIX}{value}), because the launcher's "
            "IAM policy "
            f"lets it tag and delete only {NAME_PREFIX}* resources (docs/sagemaker.md)."
        )
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


def host_name(host: str) -> str:
    """The name in ``host[:port]`` (``[v6]:port`` too)."""
    return (
        host[1:].partition("]")[0] if host.startswith("[") else host.rsplit(":", 1)[0] if host.count(":") == 1 else host
    )


def is_loopback(host: str) -> bool:
    """Whether ``host[:port]`` is this machine."""
    name = host_name(host)
    return name in LOOPBACK_HOSTS or name.startswith("127.")


def registry_host(value: str, allow_any: bool) -> str:
    """``--registry HOST[:PORT]``: an ECR host or loopback, since the ECR token is sent there; others need
    ``allow_any``."""
    host = value.strip()
    if not host or "/" in host or "@" in host:
        raise LaunchError(
            f"--registry {value}: give the host or host:port of ECR or of this machine, e.g. 127.0.0.1:5000."
        )
    if ECR_HOST.match(host_name(host)) or is_loopback(host) or allow_any:
        return host
    raise LaunchError(
        f"--registry {host}: the ECR login token (valid 12 hours for every repository of the account) would be sent "
        "to a host that is "
        "neither ECR nor this machine. Push to ECR, or to a registry on 127.0.0.1; add --allow-registry only for a "
        "mirror you run and trust."
    )
