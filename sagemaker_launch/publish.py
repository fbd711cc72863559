"""The `build` and `push` commands: our images built locally, then pushed to ECR repositories made for them."""

from __future__ import annotations

import argparse
from pathlib import Path

from sagemaker_launch import aws, images, registry, validate
from sagemaker_launch.errors import LaunchError


def add_common_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--images", nargs="+", choices=images.KINDS, default=list(images.KINDS), help="which images (default: both)"
    )
    parser.add_argument("--tag", help="image tag (default: <version>-<git commit>, -dirty with uncommitted changes)")
    parser.add_argument(
        "--context", type=Path, help="the byoc-vision checkout to build from (default: found from here)"
    )


def add_build_arguments(parser: argparse.ArgumentParser) -> None:
    add_common_arguments(parser)
    parser.add_argument("--platform", default="linux/amd64", help="target platform (SageMaker runs linux/amd64)")
    parser.add_argument(
        "--build-arg",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="e.g. TORCH_INDEX_URL=..., FLAVOUR=torch; repeatable",
    )


def add_push_arguments(parser: argparse.ArgumentParser) -> None:
    add_common_arguments(parser)
    parser.add_argument(
        "--repository-prefix", default="byoc-vision", help="ECR repositories are <prefix>-train and <prefix>-serve"
    )
    parser.add_argument(
        "--keep-images", type=int, default=30, help="lifecycle policy: keep this many newest images per repository"
    )
    parser.add_argument(
        "--untagged-days", type=int, default=7, help="lifecycle policy: expire untagged images after this many days"
    )
    parser.add_argument("--no-latest", action="store_true", help="do not also move the 'latest' tag")
    parser.add_argument(
        "--registry",
        help="push to this host[:port] instead of the ECR endpoint (an ECR host or 127.0.0.1; ECR's token is "
        "sent there)",
    )
    parser.add_argument(
        "--allow-registry",
        action="store_true",
        help="let --registry name another host (a mirror you run and trust with the ECR token)",
    )


def _tag(args: argparse.Namespace, root: Path) -> str:
    return validate.image_tag(args.tag) if args.tag else images.default_tag(root)


def run_build(args: argparse.Namespace) -> None:
    root = images.project_root(args.context)
    tag = _tag(args, root)
    build_args = validate.key_values(args.build_arg, "--build-arg")
    for kind in args.images:
        reference = images.build(kind, tag, root, args.platform, build_args)
        print(f"{kind}: {reference}")
    print(f"next: `push --tag {tag}` puts them in ECR")


def run_push(args: argparse.Namespace) -> None:
    root = images.project_root(args.context)
    tag = _tag(args, root)
    for count, flag in ((args.keep_images, "--keep-images"), (args.untagged_days, "--untagged-days")):
        if count < 1:
            raise LaunchError(f"{flag} must be at least 1 (got {count}).")
    target_host = validate.registry_host(args.registry, args.allow_registry) if args.registry else None
    client = registry.docker_client()
    for kind in args.images:  # refuse before any AWS call when an image was never built
        local = f"{images.local_name(kind)}:{tag}"
        if not client.images.list(name=local):
            raise LaunchError(
                f"no local image {local}: run `build --images {kind}{' --tag ' + tag if args.tag else ''}` first."
            )
    session = aws.session(args.region)
    ecr = session.client("ecr")
    username, password, endpoint = registry.ecr_credentials(ecr)
    host = target_host or endpoint
    auth = registry.login(client, username, password, host)
    policy = registry.lifecycle_policy(args.keep_images, args.untagged_days)
    tags = [tag] if args.no_latest else [tag, "latest"]
    for kind in args.images:
        name = f"{args.repository_prefix}-{kind}"
        uri, created = registry.ensure_repository(ecr, name, policy)
        print(f"{kind}: ECR repository {name} {'created (lifecycle policy)' if created else 'exists'}")
        target = f"{host}/{name}" if args.registry else uri
        for pushed_tag in tags:
            digest = registry.push(client, f"{images.local_name(kind)}:{tag}", target, pushed_tag, auth)
        media_type = (
            registry.registry_manifest_type(host, name, tag, auth)
            if args.registry
            else registry.ecr_manifest_type(ecr, name, tag)
        )
        registry.check_single_manifest(media_type, f"{target}:{tag}")
        print(
            f"  image: {uri}:{tag}\n  digest: {target}@{digest}\n  manifest: {media_type} (one platform, as SageMaker "
            "requires)"
        )
    print(registry.scanning_line(ecr, args.repository_prefix))
    print(
        "ECR bills the stored images per GB-month; the lifecycle policy expires old ones, `cleanup --ecr` deletes them"
    )
