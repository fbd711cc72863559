"""Our two images: their local names, their tags from the git revision, and building them with BuildKit."""

from __future__ import annotations

import subprocess
import sys
from importlib import metadata
from pathlib import Path

from sagemaker_launch.errors import LaunchError

DOCKERFILES = {"train": "docker/train.Dockerfile", "serve": "docker/serve.Dockerfile"}
KINDS = tuple(DOCKERFILES)
# SageMaker takes single-platform Docker v2 manifests only; buildx's provenance and SBOM attestations would make the
# image an index ("Unsupported manifest media type"), so they stay off whatever the user's buildx defaults to.
SINGLE_MANIFEST = ("--provenance=false", "--sbom=false")


def local_name(kind: str) -> str:
    """The local repository name of an image kind: ``byoc-vision-train`` or ``byoc-vision-serve``."""
    return f"byoc-vision-{kind}"


def project_root(start: Path | None = None) -> Path:
    """The folder holding ``docker/`` (the build context): ``start`` or one of its parents, else this checkout."""
    for folder in [start or Path.cwd(), *(start or Path.cwd()).resolve().parents, Path(__file__).resolve().parents[1]]:
        if all((folder / dockerfile).is_file() for dockerfile in DOCKERFILES.values()):
            return folder
    raise LaunchError(
        "cannot find docker/train.Dockerfile and docker/serve.Dockerfile: run this from a byoc-vision checkout (or "
        "pass --context)."
    )


def _git(root: Path, *args: str) -> str | None:
    try:
        result = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, timeout=30)
    except OSError:
        return None
    return result.stdout.strip() if result.returncode == 0 else None


def revision(root: Path) -> tuple[str | None, bool]:
    """The checkout's short commit (None outside git) and whether tracked files have uncommitted changes."""
    commit = _git(root, "rev-parse", "--short=12", "HEAD")
    dirty = bool(_git(root, "status", "--porcelain", "--untracked-files=no")) if commit else False
    return commit, dirty


def version() -> str:
    try:
        return metadata.version("byoc-vision")
    except metadata.PackageNotFoundError:
        return "0.0.0"


def default_tag(root: Path) -> str:
    """``<version>-<commit>``, with ``-dirty`` when the tree has uncommitted changes (never pushed over a clean tag)."""
    commit, dirty = revision(root)
    return f"{version()}-{commit or 'nogit'}{'-dirty' if dirty else ''}"


def build(
    kind: str,
    tag: str,
    root: Path,
    platform: str = "linux/amd64",
    build_args: dict[str, str] | None = None,
    quiet: bool = False,
) -> str:
    """Build one image with ``docker buildx build --load`` for one platform, without attestations (BuildKit: the
    Dockerfiles use cache mounts); returns ``name:tag``.

    The docker SDK's build call speaks only the legacy builder, so this one step runs the docker CLI;
    its progress goes to stderr, and a failure raises with the end of the build log.
    """
    reference = f"{local_name(kind)}:{tag}"
    commit, dirty = revision(root)
    labels = {"org.opencontainers.image.version": version(), "org.opencontainers.image.title": local_name(kind)}
    if commit:
        labels["org.opencontainers.image.revision"] = commit + ("-dirty" if dirty else "")
    command = [
        "docker",
        "buildx",
        "build",
        "--load",
        "--platform",
        platform,
        *SINGLE_MANIFEST,
        "-f",
        DOCKERFILES[kind],
        "-t",
        reference,
    ]
    command += [a for key, value in (build_args or {}).items() for a in ("--build-arg", f"{key}={value}")]
    command += [a for key, value in labels.items() for a in ("--label", f"{key}={value}")]
    command += ["--progress", "plain", "."]
    try:
        result = subprocess.run(
            command, cwd=root, stdout=subprocess.PIPE, stderr=subprocess.PIPE if quiet else None, text=True
        )
    except FileNotFoundError:
        raise LaunchError(
            "no docker CLI on PATH: install Docker (with the buildx plugin) to build the images."
        ) from None
    if result.returncode != 0:
        tail = (result.stderr or "")[-3000:] if quiet else "(see the build log above)"
        raise LaunchError(f"building {reference} from {DOCKERFILES[kind]} failed: {tail}")
    if not quiet:
        print(f"built {reference}", file=sys.stderr)
    return reference
