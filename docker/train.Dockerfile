# The byoc-vision training image: SageMaker training contract, CUDA build of torch.
#
#   docker build -f docker/train.Dockerfile -t byoc-vision-train .
#   docker run --rm -v $PWD/opt_ml:/opt/ml byoc-vision-train train
#
# TORCH_INDEX_URL picks the torch build. The default is a CUDA 12.x build, which runs on every
# NVIDIA driver >= 525 that SageMaker hosts ship (see docs/training.md). Where that index is not
# reachable, build with PyPI's wheels (CUDA 13, driver >= 580; they run on the CPU anywhere):
#   --build-arg TORCH_INDEX_URL=https://pypi.org/simple

# --- builder: wheels for the packages that ship only as C sources, so gcc stays out of the image.
FROM python:3.11-slim AS builder
RUN apt-get update \
 && apt-get install -y --no-install-recommends gcc g++ libc6-dev \
 && rm -rf /var/lib/apt/lists/*
RUN --mount=type=cache,target=/root/.cache/pip \
    pip wheel --no-deps -w /wheels sagemaker-training==4.9.0 pyinstrument==3.4.2 pyinstrument-cext

# --- final image
FROM python:3.11-slim
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cu126
ARG TORCH_VERSION=""
LABEL org.opencontainers.image.title="byoc-vision-train" \
      org.opencontainers.image.description="Fine-tunes torchvision/timm image classifiers under the SageMaker training contract" \
      org.opencontainers.image.source="https://github.com/byoc-vision/byoc-vision" \
      org.opencontainers.image.licenses="Apache-2.0" \
      com.byoc-vision.torch-index="${TORCH_INDEX_URL}"
ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    SAGEMAKER_TRAINING_MODULE=train.entry:run_job

RUN --mount=type=cache,target=/root/.cache/pip \
    pip install --index-url "${TORCH_INDEX_URL}" "torch${TORCH_VERSION}" torchvision

# Everything else the trainer needs, resolved from pyproject's `train` extra; the C extensions
# come prebuilt from the builder stage.
COPY pyproject.toml README.md /src/
RUN --mount=type=cache,target=/root/.cache/pip \
    --mount=type=bind,from=builder,source=/wheels,target=/wheels \
    mkdir -p /src/train && touch /src/train/__init__.py \
 && pip install --find-links /wheels "/src[train]" \
 && pip uninstall -y byoc-vision && rm -rf /src

COPY byoc_images /src/byoc_images
COPY byoc_contract /src/byoc_contract
COPY byoc_machine /src/byoc_machine
COPY byoc_openvino /src/byoc_openvino
COPY train /src/train
COPY pyproject.toml README.md /src/
# `train` (what SageMaker runs) becomes our entry: the toolkit's, plus defaults and loud failures for local runs.
RUN pip install --no-deps --no-cache-dir /src && rm -rf /src \
 && ln -sf /usr/local/bin/byoc-train /usr/local/bin/train \
 && python -c "import train, byoc_contract, torch, smdebug, sagemaker_training; print('torch', torch.__version__)"

WORKDIR /opt/ml/code
CMD ["train"]
