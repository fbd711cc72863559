"""Every request checked against botocore's own service model before it is sent, as AWS would check it.

botocore validates types, required members and minimums itself, but it leaves out maximums, enums and patterns (so
that an old client does not refuse what a newer API accepts). moto checks even less, so a request moto takes may be
one a real account refuses. ``problems`` runs botocore's validator and then the model's own ``max``, ``enum`` and
``pattern`` constraints; ``install`` makes every client of a session refuse such a request before it leaves.
"""

from __future__ import annotations

import functools

import boto3
import botocore.model
import botocore.session
import botocore.validate
import regex

from sagemaker_launch.errors import LaunchError


@functools.cache
def service_model(service: str) -> botocore.model.ServiceModel:
    return botocore.session.get_session().get_service_model(service)


@functools.cache
def compiled(pattern: str) -> regex.Pattern | None:
    """A model pattern (Java syntax: ``\\p{L}``, ``\\z``) as a regex, or None where it cannot be read."""
    try:
        return regex.compile(pattern, regex.DOTALL)
    except regex.error:
        return None


def bound_problems(shape: botocore.model.Shape, value, path: str) -> list[str]:
    """The ``max``, ``enum`` and ``pattern`` constraints of ``shape`` that ``value`` breaks, members included."""
    found = []
    meta = shape.metadata
    if shape.type_name == "structure" and isinstance(value, dict):
        for name, member in value.items():
            if name in shape.members:
                found += bound_problems(shape.members[name], member, f"{path}.{name}")
    elif shape.type_name == "list" and isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            found += bound_problems(shape.member, item, f"{path}[{index}]")
    elif shape.type_name == "map" and isinstance(value, dict):
        for key, item in value.items():
            found += bound_problems(shape.key, key, f"{path} (key {key!r})") + bound_problems(
                shape.value, item, f"{path}.{key}"
            )
    if "max" in meta:
        size = (
            value
            if isinstance(value, (int, float)) and not isinstance(value, bool)
            else len(value)
            if isinstance(value, (str, bytes, list, tuple, dict))
            else None
        )
        if size is not None and size > meta["max"]:
            found.append(
                f"{path}: {size if isinstance(value, (int, float)) else f'length {size}'} is above the maximum "
                f"{meta['max']}"
            )
    if shape.type_name == "string" and isinstance(value, str):
        if shape.enum and value not in shape.enum:
            found.append(f"{path}: {value!r} is not one of {', '.join(shape.enum)}")
        pattern = compiled(meta["pattern"]) if "pattern" in meta else None
        if pattern is not None and not pattern.fullmatch(
            value
        ):  # AWS matches the whole value, as Java's matches() does
            found.append(f"{path}: {value!r} does not match the pattern {meta['pattern']}")
    return found


def operation_problems(operation: botocore.model.OperationModel, params: dict) -> list[str]:
    """What a real AWS would refuse in this request to ``operation``."""
    shape = operation.input_shape
    if shape is None:
        return []
    report = botocore.validate.ParamValidator().validate(params, shape)
    found = (
        [line.strip() for line in report.generate_report().splitlines() if line.strip()] if report.has_errors() else []
    )
    return found + bound_problems(shape, params, operation.name)


def problems(service: str, operation: str, params: dict) -> list[str]:
    """What a real AWS would refuse in this request, by botocore's model of ``service`` (e.g. ``sagemaker``)."""
    return operation_problems(service_model(service).operation_model(operation), params)


def check_request(params: dict, model: botocore.model.OperationModel, **_) -> None:
    """A ``before-parameter-build`` handler: a LaunchError naming each problem of the request, before it is sent."""
    found = operation_problems(model, params)
    if found:
        raise LaunchError(
            f"the {model.name} request does not fit the AWS API (please report this): " + "; ".join(found)
        )


def install(session: boto3.session.Session) -> boto3.session.Session:
    """Make every client of ``session`` check its requests by the model first."""
    session.events.register("before-parameter-build", check_request)
    return session
