"""`build` and `push`: real BuildKit builds, the ECR token from moto_server, a push to a real registry, a pull back by
digest."""

import contextlib
import json
import subprocess

import boto3
import pytest
import registry_stand_in
from aws_stand_in import environment, run_cli
from conftest import REPO

import docker
from sagemaker_launch import images

REGION = "us-east-1"
ECR_PASSWORD = "123456789012-auth-token"  # what moto's GetAuthorizationToken hands out for its default account


def test_default_tag_names_version_and_commit():
    commit = subprocess.run(
        ["git", "rev-parse", "--short=12", "HEAD"], cwd=REPO, capture_output=True, text=True
    ).stdout.strip()
    tag = images.default_tag(REPO)
    assert tag.startswith(f"{images.version()}-{commit}")
    assert tag.endswith("-dirty") == bool(
        subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO, capture_output=True, text=True
        ).stdout.strip()
    )


def test_build_labels_the_image_with_the_revision(serve_image, capsys):
    code, out, err = run_cli(["build", "--images", "serve", "--tag", "cli-build", "--context", str(REPO)], capsys)
    assert code == 0, err
    assert "serve: byoc-vision-serve:cli-build" in out and "push --tag cli-build" in out
    try:
        labels = docker.from_env().images.get("byoc-vision-serve:cli-build").labels
        commit, _ = images.revision(REPO)
        assert labels["org.opencontainers.image.revision"].startswith(commit)
        assert labels["org.opencontainers.image.version"] == images.version()
        assert labels["com.amazonaws.sagemaker.capabilities.accept-bind-to-port"] == "true"
    finally:
        docker.from_env().images.remove("byoc-vision-serve:cli-build")


def test_build_refusals(capsys):
    code, _, err = run_cli(["build", "--tag", "-bad tag"], capsys)
    assert code == 2 and "use up to 128 letters" in err
    code, _, err = run_cli(["build", "--build-arg", "FLAVOUR"], capsys)
    assert code == 2 and "--build-arg 'FLAVOUR': write it as NAME=VALUE" in err


@pytest.mark.skipif(registry_stand_in.available() is not None, reason=str(registry_stand_in.available()))
def test_push_through_ecr_token_to_real_registry_and_pull_by_digest(aws, serve_image, capsys):
    client = docker.from_env()
    with registry_stand_in.docker_registry("AWS", ECR_PASSWORD) as host:
        code, out, err = run_cli(
            [
                "push",
                "--images",
                "serve",
                "--tag",
                "test",
                "--registry",
                host,
                "--region",
                REGION,
                "--keep-images",
                "12",
            ],
            capsys,
        )
        assert code == 0, err
        uri = f"123456789012.dkr.ecr.{REGION}.amazonaws.com/byoc-vision-serve"
        assert "ECR repository byoc-vision-serve created (lifecycle policy)" in out
        assert (
            "image scanning: this account's registry does not scan byoc-vision-* (per-repository scan on push is "
            "deprecated)" in out
        )
        assert f"image: {uri}:test" in out
        digest = out.split(f"digest: {host}/byoc-vision-serve@")[1].split()[0]
        assert digest.startswith("sha256:") and len(digest) == 71

        ecr = boto3.client("ecr", region_name=REGION)
        repository = ecr.describe_repositories(repositoryNames=["byoc-vision-serve"])["repositories"][0]
        assert (
            repository["imageScanningConfiguration"] == {"scanOnPush": False} and repository["repositoryUri"] == uri
        )  # the registry's setting rules
        assert repository["encryptionConfiguration"]["encryptionType"] == "AES256"
        rules = json.loads(ecr.get_lifecycle_policy(repositoryName="byoc-vision-serve")["lifecyclePolicyText"])["rules"]
        assert [r["selection"]["tagStatus"] for r in rules] == ["untagged", "any"]
        assert rules[0]["selection"]["countNumber"] == 7 and rules[1]["selection"] == {
            "tagStatus": "any",
            "countType": "imageCountMoreThan",
            "countNumber": 12,
        }
        tags = {
            t["Key"]: t["Value"] for t in ecr.list_tags_for_resource(resourceArn=repository["repositoryArn"])["tags"]
        }
        assert tags["created-by"] == "byoc-vision"

        auth = {"username": "AWS", "password": ECR_PASSWORD}
        pulled = client.images.pull(f"{host}/byoc-vision-serve@{digest}", auth_config=auth)
        assert pulled.id == client.images.get(serve_image).id
        assert client.images.get_registry_data(f"{host}/byoc-vision-serve:latest", auth_config=auth).id == digest

        assert (
            "manifest: application/vnd.docker.distribution.manifest.v2+json (one platform, as SageMaker requires)"
            in out
        )
        for reference in ("test", "latest"):  # read back through the registry's HTTP API, as SageMaker's pull would
            assert (
                manifest_type(host, "byoc-vision-serve", reference)
                == "application/vnd.docker.distribution.manifest.v2+json"
            )

        code, out, err = run_cli(
            ["push", "--images", "serve", "--tag", "test", "--registry", host, "--region", REGION, "--no-latest"],
            capsys,
        )
        assert code == 0, err
        assert "ECR repository byoc-vision-serve exists" in out and f"@{digest}" in out
        refuses_an_index_in_the_registry(host, digest)
    for reference in (
        f"{host}/byoc-vision-serve:test",
        f"{host}/byoc-vision-serve:latest",
        f"{host}/byoc-vision-serve@{digest}",
    ):
        with contextlib.suppress(docker.errors.ImageNotFound):
            client.images.remove(reference)


@pytest.mark.skipif(registry_stand_in.available() is not None, reason=str(registry_stand_in.available()))
def test_push_with_a_rejected_token_fails_with_the_reason(aws, serve_image, capsys):
    with registry_stand_in.docker_registry("AWS", "another-password") as host:
        code, _, err = run_cli(
            ["push", "--images", "serve", "--tag", "test", "--registry", host, "--region", REGION], capsys
        )
    assert (
        code == 2 and f"docker login to {host} with the ECR token failed" in err and "ecr:GetAuthorizationToken" in err
    )


def test_push_refuses_an_image_never_built_before_any_aws_call(capsys):
    with environment({"AWS_ENDPOINT_URL": "http://127.0.0.1:9"}):
        code, _, err = run_cli(["push", "--images", "serve", "--tag", "never-built", "--region", REGION], capsys)
    assert (
        code == 2
        and "no local image byoc-vision-serve:never-built: run `build --images serve --tag never-built` first" in err
    )


@pytest.mark.parametrize(
    "host",
    ["registry.example.com", "10.0.0.5:5000", "123456789012.dkr.ecr.us-east-1.amazonaws.com.evil.io", "user@127.0.0.1"],
)
def test_push_never_sends_the_ecr_token_to_another_host(host, capsys):
    with environment({"AWS_ENDPOINT_URL": "http://127.0.0.1:9"}):  # any AWS call would fail differently
        code, _, err = run_cli(
            ["push", "--images", "serve", "--tag", "never-built", "--registry", host, "--region", REGION], capsys
        )
    assert code == 2 and f"--registry {host}" in err and "ECR" in err


@pytest.mark.parametrize(
    "host",
    [
        "127.0.0.1:5000",
        "localhost:5000",
        "[::1]:5000",
        "123456789012.dkr.ecr.eu-west-1.amazonaws.com",
        "123456789012.dkr.ecr.cn-north-1.amazonaws.com.cn",
    ],
)
def test_push_accepts_ecr_and_loopback_registries(host):
    from sagemaker_launch import validate

    assert validate.registry_host(host, allow_any=False) == host


def test_allow_registry_lets_a_trusted_mirror_through(capsys):
    with environment({"AWS_ENDPOINT_URL": "http://127.0.0.1:9"}):
        code, _, err = run_cli(
            [
                "push",
                "--images",
                "serve",
                "--tag",
                "never-built",
                "--registry",
                "mirror.example.com",
                "--allow-registry",
                "--region",
                REGION,
            ],
            capsys,
        )
    assert (
        code == 2 and "no local image byoc-vision-serve:never-built" in err
    )  # past the host check, stopped by the next one


def manifest_type(host: str, repository: str, reference: str) -> str:
    """The Content-Type the registry serves ``repository:reference``'s manifest with, asked for any manifest type."""
    import base64
    import urllib.request

    accept = (
        "application/vnd.docker.distribution.manifest.v2+json, application/vnd.oci.image.manifest.v1+json, "
        "application/vnd.oci.image.index.v1+json, application/vnd.docker.distribution.manifest.list.v2+json"
    )
    request = urllib.request.Request(f"http://{host}/v2/{repository}/manifests/{reference}", headers={"Accept": accept})
    request.add_header("Authorization", "Basic " + base64.b64encode(f"AWS:{ECR_PASSWORD}".encode()).decode())
    with urllib.request.urlopen(request, timeout=30) as response:
        return response.headers["Content-Type"]


@pytest.mark.skipif(registry_stand_in.available() is not None, reason=str(registry_stand_in.available()))
def test_both_images_are_pushed_as_single_platform_docker_v2_manifests(aws, serve_image, train_image, capsys):
    """What SageMaker takes: `build` turns buildx's attestations off, and each pushed manifest is read back."""
    with registry_stand_in.docker_registry("AWS", ECR_PASSWORD) as host:
        code, out, err = run_cli(
            ["push", "--tag", "test", "--registry", host, "--region", REGION, "--no-latest"], capsys
        )
        assert code == 0, err
        for kind in ("train", "serve"):
            media_type = manifest_type(host, f"byoc-vision-{kind}", "test")
            print(f"{host}/byoc-vision-{kind}:test manifest: {media_type}")
            assert media_type == "application/vnd.docker.distribution.manifest.v2+json"
        assert out.count("manifest: application/vnd.docker.distribution.manifest.v2+json") == 2
    client = docker.from_env()
    for kind in ("train", "serve"):
        with contextlib.suppress(docker.errors.ImageNotFound):
            client.images.remove(f"{host}/byoc-vision-{kind}:test")  # the push's local tag


OCI_INDEX = {
    "schemaVersion": 2,
    "mediaType": "application/vnd.oci.image.index.v1+json",
    "manifests": [
        {
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": "sha256:" + "a" * 64,
            "size": 500,
            "platform": {"architecture": "amd64", "os": "linux"},
        },
        {
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": "sha256:" + "b" * 64,
            "size": 500,
            "annotations": {"vnd.docker.reference.type": "attestation-manifest"},
            "platform": {"architecture": "unknown", "os": "unknown"},
        },
    ],
}


def test_an_index_in_ecr_is_refused_after_the_push_with_what_to_do(aws):
    """What Docker Engine 29's containerd store pushes: an OCI index with an attestation manifest. The check reads
    ECR's BatchGetImage (moto here) and refuses it, saying how to push what SageMaker takes."""
    from sagemaker_launch import registry
    from sagemaker_launch.errors import LaunchError

    ecr = boto3.client("ecr", region_name=REGION)
    ecr.create_repository(repositoryName="byoc-index-check")
    ecr.put_image(
        repositoryName="byoc-index-check",
        imageManifest=json.dumps(OCI_INDEX),
        imageTag="v1",
        imageManifestMediaType=OCI_INDEX["mediaType"],
    )
    media_type = registry.ecr_manifest_type(ecr, "byoc-index-check", "v1")
    assert media_type == "application/vnd.oci.image.index.v1+json"
    with pytest.raises(
        LaunchError, match=r"which SageMaker refuses.*byoc-launch build.*docker push --platform linux/amd64"
    ):
        registry.check_single_manifest(media_type, "123456789012.dkr.ecr.us-east-1.amazonaws.com/byoc-index-check:v1")
    single = {
        "schemaVersion": 2,
        "mediaType": registry.DOCKER_V2,
        "config": {
            "mediaType": "application/vnd.docker.container.image.v1+json",
            "digest": "sha256:" + "c" * 64,
            "size": 10,
        },
        "layers": [],
    }
    ecr.put_image(repositoryName="byoc-index-check", imageManifest=json.dumps(single), imageTag="v2")
    registry.check_single_manifest(registry.ecr_manifest_type(ecr, "byoc-index-check", "v2"), "v2")  # passes
    with pytest.raises(LaunchError, match="ECR has no image byoc-index-check:v3 after the push"):
        registry.ecr_manifest_type(ecr, "byoc-index-check", "v3")


def refuses_an_index_in_the_registry(host: str, digest: str) -> None:
    """An OCI index over the pushed image (what Docker Engine 29 pushes), put into the real registry: read back
    through its HTTP API, it is refused with what to do."""
    import base64
    import urllib.request

    from sagemaker_launch import registry
    from sagemaker_launch.errors import LaunchError

    index = {
        "schemaVersion": 2,
        "mediaType": OCI_INDEX["mediaType"],
        "manifests": [
            {
                "mediaType": registry.DOCKER_V2,
                "digest": digest,
                "size": len(fetch_manifest(host, digest)),
                "platform": {"architecture": "amd64", "os": "linux"},
            }
        ],
    }
    request = urllib.request.Request(
        f"http://{host}/v2/byoc-vision-serve/manifests/index",
        data=json.dumps(index).encode(),
        method="PUT",
        headers={"Content-Type": OCI_INDEX["mediaType"]},
    )
    request.add_header("Authorization", "Basic " + base64.b64encode(f"AWS:{ECR_PASSWORD}".encode()).decode())
    urllib.request.urlopen(request, timeout=30).read()
    auth = {"username": "AWS", "password": ECR_PASSWORD}
    media_type = registry.registry_manifest_type(host, "byoc-vision-serve", "index", auth)
    assert media_type == OCI_INDEX["mediaType"]
    with pytest.raises(
        LaunchError,
        match=r"byoc-vision-serve:index was pushed as application/vnd.oci.image.index.v1\+json, "
        "which SageMaker refuses",
    ):
        registry.check_single_manifest(media_type, f"{host}/byoc-vision-serve:index")
    assert registry.registry_manifest_type(host, "byoc-vision-serve", "test", auth) == registry.DOCKER_V2


def fetch_manifest(host: str, reference: str) -> bytes:
    import base64
    import urllib.request

    request = urllib.request.Request(
        f"http://{host}/v2/byoc-vision-serve/manifests/{reference}",
        headers={"Accept": "application/vnd.docker.distribution.manifest.v2+json"},
    )
    request.add_header("Authorization", "Basic " + base64.b64encode(f"AWS:{ECR_PASSWORD}".encode()).decode())
    with urllib.request.urlopen(request, timeout=30) as response:
        return response.read()
