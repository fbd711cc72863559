"""boto3 clients for one region, and what every resource this tool creates carries."""

from __future__ import annotations

import datetime as dt
import os
import time

import boto3
import botocore.exceptions

from sagemaker_launch import api_model
from sagemaker_launch.errors import LaunchError

CREATED_BY = {"Key": "created-by", "Value": "byoc-vision"}


def session(region: str | None) -> boto3.session.Session:
    """A session in ``region`` (or the configured default) whose clients check each request against botocore's model
    before sending it (``api_model``); ``AWS_ENDPOINT_URL`` is honoured by boto3 itself."""
    region = (
        region
        or os.environ.get("AWS_REGION")
        or os.environ.get("AWS_DEFAULT_REGION")
        or boto3.session.Session().region_name
    )
    if not region:
        raise LaunchError("no AWS region: pass --region (or set AWS_REGION).")
    return api_model.install(boto3.session.Session(region_name=region))


def tags(extra: dict[str, str], kind: str) -> list[dict[str, str]]:
    """Our tags (so `status` and `cleanup` can find what we made) plus the user's."""
    return [CREATED_BY, {"Key": "byoc-vision:kind", "Value": kind}, *({"Key": k, "Value": v} for k, v in extra.items())]


def unique_name(prefix: str) -> str:
    return f"{prefix}-{dt.datetime.now(dt.UTC).strftime('%Y%m%d-%H%M%S')}"


def stamp() -> str:
    """A short UTC time stamp down to the millisecond, for names that must differ between quick runs."""
    return dt.datetime.now(dt.UTC).strftime("%m%d-%H%M%S-%f")[:-3]


def console_link(region: str, kind: str, name: str) -> str:
    return f"https://{region}.console.aws.amazon.com/sagemaker/home?region={region}#/{kind}/{name}"


def wait_for(function, request: dict, status_key: str, terminal: tuple[str, ...], poll_seconds: float) -> dict:
    """Describe something until its status is terminal, printing `<name>: <status>` on each change (the name: the
    request's one value); returns the last description."""
    status, label = None, next(iter(request.values()))
    while True:
        described = call(function, **request)
        if described[status_key] != status:
            status = described[status_key]
            print(f"{label}: {status}", flush=True)
        if status in terminal:
            return described
        time.sleep(poll_seconds)


def not_offered(exc: botocore.exceptions.ClientError) -> bool:
    """Whether an error means the endpoint does not implement the operation (moto answers HTTP 500 with a page)."""
    code = exc.response.get("Error", {}).get("Code")
    return code in ("NotImplemented", "NotImplementedError", "InternalFailure") or exc.response["ResponseMetadata"][
        "HTTPStatusCode"
    ] in (500, 501)


def _call(function, request: dict, tolerated):
    try:
        return function(**request)
    except botocore.exceptions.ClientError as exc:
        if tolerated(exc):
            return None
        error = exc.response.get("Error", {})
        message = " ".join(str(error.get("Message")).split())  # one line, even when the answer was an HTML page
        raise LaunchError(f"AWS refused {exc.operation_name}: {error.get('Code')}: {message[:500]}") from None
    except botocore.exceptions.ParamValidationError as exc:
        raise LaunchError(f"the request does not fit the AWS API (please report this): {exc}") from None
    except botocore.exceptions.BotoCoreError as exc:
        raise LaunchError(f"cannot reach AWS: {exc}") from None


def call(function, **request):
    """An AWS call whose refusal becomes a LaunchError with AWS's own reason."""
    return _call(function, request, lambda exc: False)


def find(function, missing: str, **request):
    """Like ``call``, but None when AWS answers with the error code ``missing`` (the thing does not exist)."""
    return _call(function, request, lambda exc: exc.response.get("Error", {}).get("Code") == missing)


def optional(function, **request):
    """Like ``call``, but None when the AWS endpoint does not offer the operation."""
    return _call(function, request, not_offered)
