"""ECR repositories (scan on push, lifecycle policy), the ECR token login, and pushing with the docker SDK."""
from __future__ import annotations

import base64
import json

import docker
import docker.errors
from tqdm import tqdm

from sagemaker_launch import aws
from sagemaker_launch.errors import LaunchError


def lifecycle_policy(keep_images: int, untagged_days: int) -> str:
    """Expire untagged images after ``untagged_days``, and keep only the newest ``keep_images`` images."""
    rules = [
        {"rulePriority": 1, "description": f"expire untagged images after {untagged_days} days",
         "selection": {"tagStatus": "untagged", "countType": "sinceImagePushed", "countUnit": "days", "countNumber": untagged_days},
         "action": {"type": "expire"}},
        {"rulePriority": 2, "description": f"keep the newest {keep_images} images",
         "selection": {"tagStatus": "any", "countType": "imageCountMoreThan", "countNumber": keep_images},
         "action": {"type": "expire"}},
    ]  # fmt: skip
    return json.dumps({"rules": rules})


def ensure_repository(ecr, name: str, policy: str) -> tuple[str, bool]:
    """The repository's URI, creating it (scan on push, mutable tags, AES256, lifecycle policy) when missing."""
    found = aws.find(ecr.describe_repositories, "RepositoryNotFoundException", repositoryNames=[name])
    if found:
        return found["repositories"][0]["repositoryUri"], False
    created = aws.call(
        ecr.create_repository,
        repositoryName=name,
        imageScanningConfiguration={"scanOnPush": True},
        imageTagMutability="MUTABLE",
        encryptionConfiguration={"encryptionType": "AES256"},
        tags=aws.tags({}, "ecr-repository"),
    )["repository"]
    aws.call(ecr.put_lifecycle_policy, repositoryName=name, lifecyclePolicyText=policy)
    return created["repositoryUri"], True


def ecr_credentials(ecr) -> tuple[str, str, str]:
    """(username, password, registry host) from an ECR authorization token."""
    data = aws.call(ecr.get_authorization_token)["authorizationData"][0]
    username, _, password = base64.b64decode(data["authorizationToken"]).decode().partition(":")
    return username, password, data["proxyEndpoint"].removeprefix("https://").removeprefix("http://")


def docker_client() -> docker.DockerClient:
    try:
        client = docker.from_env()
        client.ping()
    except docker.errors.DockerException as exc:
        raise LaunchError(f"cannot reach the Docker engine ({exc}); start Docker (or set DOCKER_HOST).") from None
    return client


def login(client: docker.DockerClient, username: str, password: str, registry: str) -> dict:
    """``docker login`` through the engine; returns the auth config to push and pull with."""
    try:
        client.login(username=username, password=password, registry=registry, reauth=True)
    except docker.errors.APIError as exc:
        raise LaunchError(f"docker login to {registry} with the ECR token failed: {exc.explanation}; check the region and your ecr:GetAuthorizationToken permission.") from None
    return {"username": username, "password": password}


def push(client: docker.DockerClient, local: str, repository: str, tag: str, auth: dict) -> str:
    """Tag ``local`` as ``repository:tag`` and push it, with a bar over its layers; returns the pushed digest."""
    try:
        client.images.get(local).tag(repository, tag)
    except docker.errors.ImageNotFound:
        raise LaunchError(f"no local image {local}: build it first (`build`), or pass the --tag it was built with.") from None
    digest, layers = None, tqdm(total=0, unit="layer", desc=f"push {repository.rsplit('/', 1)[-1]}:{tag}", leave=False)
    try:
        for event in client.api.push(repository, tag=tag, stream=True, decode=True, auth_config=auth):
            if "error" in event:
                raise LaunchError(f"pushing {repository}:{tag} failed: {event['error']}")
            status = event.get("status", "")
            if status == "Preparing":
                layers.total += 1
                layers.refresh()
            elif status in ("Pushed", "Layer already exists") or status.startswith("Mounted from"):
                layers.update()
            digest = event.get("aux", {}).get("Digest", digest)
    except docker.errors.APIError as exc:
        raise LaunchError(f"pushing {repository}:{tag} failed: {exc.explanation}") from None
    finally:
        layers.close()
    if not digest:
        raise LaunchError(f"the registry did not report a digest for {repository}:{tag}; the push may not have completed.")
    return digest
