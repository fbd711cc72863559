"""ECR repositories (lifecycle policy; scanning is the registry's), the ECR token login, and pushing with the docker
SDK."""

from __future__ import annotations

import base64
import fnmatch
import json
import urllib.request

import docker.errors
from tqdm import tqdm

import docker
from sagemaker_launch import aws, validate
from sagemaker_launch.errors import LaunchError


def lifecycle_policy(keep_images: int, untagged_days: int) -> str:
    """Expire untagged images after ``untagged_days``, and keep only the newest ``keep_images`` images."""
    rules = [
        {
            "rulePriority": 1,
            "description": f"expire untagged images after {untagged_days} days",
            "selection": {
                "tagStatus": "untagged",
                "countType": "sinceImagePushed",
                "countUnit": "days",
                "countNumber": untagged_days,
            },
            "action": {"type": "expire"},
        },
        {
            "rulePriority": 2,
            "description": f"keep the newest {keep_images} images",
            "selection": {"tagStatus": "any", "countType": "imageCountMoreThan", "countNumber": keep_images},
            "action": {"type": "expire"},
        },
    ]
    return json.dumps({"rules": rules})


def ensure_repository(ecr, name: str, policy: str) -> tuple[str, bool]:
    """The repository's URI, creating it (mutable tags, AES256, lifecycle policy) when missing. Scanning is the
    registry's (``scanning_line``): a repository's own scan-on-push setting is deprecated."""
    found = aws.find(ecr.describe_repositories, "RepositoryNotFoundException", repositoryNames=[name])
    if found:
        return found["repositories"][0]["repositoryUri"], False
    created = aws.call(
        ecr.create_repository,
        repositoryName=name,
        imageTagMutability="MUTABLE",
        encryptionConfiguration={"encryptionType": "AES256"},
        tags=aws.tags({}, "ecr-repository"),
    )["repository"]
    aws.call(ecr.put_lifecycle_policy, repositoryName=name, lifecyclePolicyText=policy)
    return created["repositoryUri"], True


SCAN_RULES = (
    '[{"scanFrequency":"SCAN_ON_PUSH","repositoryFilters":[{"filter":"byoc-vision-*","filterType":"WILDCARD"}]}]'
)


def scanning_line(ecr, prefix: str) -> str:
    """Whether the account's registry-level scanning covers our repositories, and how to turn it on when it does not."""
    found = aws.optional(ecr.get_registry_scanning_configuration)
    rules = (found or {}).get("scanningConfiguration", {}).get("rules", [])
    covered = [
        r for r in rules if any(fnmatch.fnmatch(f"{prefix}-serve", f["filter"]) for f in r.get("repositoryFilters", []))
    ]
    if covered:
        return (
            f"image scanning: the registry scans {prefix}-* ({covered[0]['scanFrequency']}, "
            f"{found['scanningConfiguration'].get('scanType', 'BASIC')})"
        )
    return (
        f"image scanning: this account's registry does not scan {prefix}-* (per-repository scan on push is "
        "deprecated); turn it on once with "
        "`aws ecr put-registry-scanning-configuration --scan-type BASIC --rules "
        f"'{SCAN_RULES.replace('byoc-vision', prefix)}'`"
    )


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
        raise LaunchError(
            f"docker login to {registry} with the ECR token failed: {exc.explanation}; check the region and your "
            "ecr:GetAuthorizationToken permission."
        ) from None
    return {"username": username, "password": password}


def push(client: docker.DockerClient, local: str, repository: str, tag: str, auth: dict) -> str:
    """Tag ``local`` as ``repository:tag`` and push it, with a bar over its layers; returns the pushed digest."""
    try:
        client.images.get(local).tag(repository, tag)
    except docker.errors.ImageNotFound:
        raise LaunchError(
            f"no local image {local}: build it first (`build`), or pass the --tag it was built with."
        ) from None
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
        raise LaunchError(
            f"the registry did not report a digest for {repository}:{tag}; the push may not have completed."
        )
    return digest


DOCKER_V2 = "application/vnd.docker.distribution.manifest.v2+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
INDEXES = ("application/vnd.docker.distribution.manifest.list.v2+json", "application/vnd.oci.image.index.v1+json")
MANIFEST_TYPES = (DOCKER_V2, OCI_MANIFEST, *INDEXES)


def ecr_manifest_type(ecr, repository: str, tag: str) -> str:
    """The media type of ``repository:tag``'s manifest as ECR stores it (BatchGetImage's imageManifestMediaType)."""
    found = aws.call(
        ecr.batch_get_image,
        repositoryName=repository,
        imageIds=[{"imageTag": tag}],
        acceptedMediaTypes=list(MANIFEST_TYPES),
    )
    if not found.get("images"):
        reasons = "; ".join(f.get("failureReason", "") for f in found.get("failures", []))
        raise LaunchError(f"ECR has no image {repository}:{tag} after the push ({reasons or 'not found'}); push again.")
    image = found["images"][0]
    return image.get("imageManifestMediaType") or json.loads(image.get("imageManifest") or "{}").get("mediaType", "")


def registry_manifest_type(host: str, repository: str, tag: str, auth: dict) -> str:
    """The media type of ``repository:tag``'s manifest as the registry at ``host`` serves it (its HTTP API v2)."""
    scheme = "http" if validate.is_loopback(host) else "https"
    request = urllib.request.Request(
        f"{scheme}://{host}/v2/{repository}/manifests/{tag}",
        method="HEAD",
        headers={"Accept": ", ".join(MANIFEST_TYPES)},
    )
    token = base64.b64encode(f"{auth['username']}:{auth['password']}".encode()).decode()
    request.add_header("Authorization", f"Basic {token}")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.headers.get("Content-Type", "").split(";")[0].strip()
    except OSError as exc:
        raise LaunchError(
            f"cannot read back the manifest of {host}/{repository}:{tag} ({exc}); check the registry and push again."
        ) from None


def check_single_manifest(media_type: str, reference: str) -> None:
    """Refuse what SageMaker refuses ("Unsupported manifest media type"): an image index or manifest list."""
    if media_type in INDEXES or media_type not in MANIFEST_TYPES:
        raise LaunchError(
            f"{reference} was pushed as {media_type or 'an unknown manifest type'}, which SageMaker refuses: it takes "
            f"one platform's {DOCKER_V2}."
            " Build it again with `byoc-launch build` (one platform, no provenance or SBOM attestations) and push "
            "again; with Docker Engine 29's"
            " containerd image store, `docker push --platform linux/amd64 IMAGE` pushes that platform's manifest alone."
        )
