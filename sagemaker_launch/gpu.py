"""Which NVIDIA driver a GPU instance needs: chosen by the CUDA version the serving image was built with.

SageMaker picks the host's driver by an AMI version. A CUDA 12 build runs on driver 550 (and, through CUDA's minor
version compatibility, on 535); a CUDA 13 build needs driver 580, which only the AL2023 inference AMI has. Batch
transform offers no driver 580 AMI, so a CUDA 13 image cannot run there on a GPU.
"""

from __future__ import annotations

import json
import re
import subprocess

from sagemaker_launch.errors import LaunchError

FAMILIES = ("ml.g", "ml.p")  # NVIDIA GPUs
INFERENCE_AMI = {
    12: "al2-ami-sagemaker-inference-gpu-3-1",
    13: "al2023-ami-sagemaker-inference-gpu-4-1",
}  # driver 550, driver 580
TRANSFORM_AMI = {12: "al2-ami-sagemaker-batch-gpu-535"}  # driver 535
CUDA_INDEX = re.compile(r"/whl/cu(?P<major>1[0-9])(?P<minor>[0-9])/?$")
NO_CUDA = "none"


def is_gpu(instance_type: str) -> bool:
    return instance_type.startswith(FAMILIES)


def cuda_from_labels(labels: dict[str, str]) -> str | None:
    """The CUDA version (``12.6``), ``none``, or None when the labels do not say, from the labels `build` sets."""
    if labels.get("com.byoc-vision.flavour") == "default":
        return NO_CUDA  # the default serving flavour: OpenVINO / ONNX Runtime on the CPU, no torch, no CUDA
    index = labels.get("com.byoc-vision.torch-index", "")
    if index.rstrip("/").endswith("/whl/cpu"):
        return NO_CUDA
    match = CUDA_INDEX.search(index)
    return f"{match['major']}.{match['minor']}" if match else None


def local_labels(image: str) -> dict[str, str] | None:
    """The labels of ``image`` where Docker on this machine has it (`push` leaves the pushed tag), else None."""
    try:
        result = subprocess.run(
            ["docker", "image", "inspect", "--format", "{{json .Config.Labels}}", image],
            capture_output=True,
            text=True,
            timeout=30,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return (json.loads(result.stdout) or {}) if result.returncode == 0 else None


def image_cuda(image: str, given: str | None) -> str:
    """``--image-cuda`` (``12.6``, ``13.0`` or ``none``), else what the image's labels say; refuses when neither
    tells."""
    if given:
        if given != NO_CUDA and not re.fullmatch(r"1[0-9]\.[0-9]+", given):
            raise LaunchError(
                f"--image-cuda {given!r}: give the CUDA version the image was built with (e.g. 12.6 or 13.0), or none."
            )
        return given
    labels = local_labels(image)
    found = cuda_from_labels(labels) if labels is not None else None
    if found is None:
        raise LaunchError(
            f"cannot tell which CUDA {image} was built with "
            f"({'its labels do not say' if labels is not None else 'it is not on this machine'}), "
            "and a GPU host's driver depends on it: pass --image-cuda 12.x or 13.x as built (none for the default "
            "OpenVINO image)."
        )
    return found


def ami(cuda: str, versions: dict[int, str], where: str) -> str | None:
    """The AMI version for ``cuda`` (None for an image without CUDA: SageMaker's default host)."""
    if cuda == NO_CUDA:
        return None
    major = int(cuda.split(".")[0])
    if major not in versions:
        newest = max(versions)
        raise LaunchError(
            f"{where} has no GPU host for a CUDA {cuda} image (its newest driver runs CUDA {newest}): "
            f"build the image with a CUDA {newest} torch (TORCH_INDEX_URL=https://download.pytorch.org/whl/cu126), or "
            "use a CPU instance."
        )
    return versions[major]


def host_ami(
    image: str, given_cuda: str | None, instance_type: str, versions: dict[int, str], where: str
) -> str | None:
    """The GPU host's AMI version for the image's CUDA (None: a CPU instance, or an image without CUDA)."""
    return ami(image_cuda(image, given_cuda), versions, where) if is_gpu(instance_type) else None
