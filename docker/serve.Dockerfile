# The byoc-vision serving image: SageMaker endpoint contract (real-time, batch transform, multi-model).
#
#   docker build -f docker/serve.Dockerfile -t byoc-vision-serve .
#   docker run --rm -p 127.0.0.1:8080:8080 -v $PWD/model:/opt/ml/model:ro byoc-vision-serve serve
#
# The default flavour runs model.onnx with OpenVINO (bf16 where the CPU has it) or ONNX Runtime, no torch.
# The torch flavour adds torch + torchvision for TorchScript / state-dict models and user code that needs torch:
#   --build-arg FLAVOUR=torch [--build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu]

# --- java: a small Java runtime for multi-model-server (multi-model endpoints), cut down with jlink.
FROM python:3.11-slim AS java
RUN apt-get update \
 && apt-get install -y --no-install-recommends openjdk-17-jdk-headless binutils \
 && rm -rf /var/lib/apt/lists/*
RUN jlink --add-modules java.base,java.logging,java.management,java.naming,java.xml,java.desktop,java.sql,java.scripting,jdk.unsupported \
      --strip-debug --no-man-pages --no-header-files --compress=2 --output /opt/java

# --- final image
FROM python:3.11-slim
ARG FLAVOUR=default
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
LABEL org.opencontainers.image.title="byoc-vision-serve" \
      org.opencontainers.image.description="Serves byoc-vision image classifiers under the SageMaker endpoint contract" \
      org.opencontainers.image.source="https://github.com/byoc-vision/byoc-vision" \
      org.opencontainers.image.licenses="Apache-2.0" \
      com.amazonaws.sagemaker.capabilities.accept-bind-to-port=true \
      com.amazonaws.sagemaker.capabilities.multi-models=true \
      com.byoc-vision.flavour="${FLAVOUR}" \
      com.byoc-vision.torch-index="${TORCH_INDEX_URL}"
# MALLOC_ARENA_MAX=2 with serve's malloc_trim once idle: memory settles at its warm level after a burst of large
# photos (bench burst, docs/benchmarks.md), instead of staying at the burst's peak.
ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    MALLOC_ARENA_MAX=2 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    JAVA_HOME=/opt/java \
    PATH=/opt/java/bin:$PATH
COPY --from=java /opt/java /opt/java

RUN --mount=type=cache,target=/root/.cache/pip \
    case "${FLAVOUR}" in \
      default) ;; \
      torch) pip install --index-url "${TORCH_INDEX_URL}" torch torchvision ;; \
      *) echo "FLAVOUR=${FLAVOUR}: use default or torch" >&2; exit 1 ;; \
    esac

# Dependencies of pyproject's `serve` extra first, so code changes do not reinstall them. What serving never
# loads goes: OpenVINO's GPU/NPU plugins and non-ONNX readers, and the test suites of numpy and scipy.
COPY pyproject.toml README.md /src/
RUN --mount=type=cache,target=/root/.cache/pip \
    mkdir -p /src/serve && touch /src/serve/__init__.py \
 && pip install "/src[serve]" $([ "${FLAVOUR}" = torch ] && echo "safetensors>=0.4") \
 && pip uninstall -y byoc-vision && rm -rf /src \
 && cd /usr/local/lib/python3.11/site-packages \
 && rm -rf openvino/include openvino/libs/libopenvino_intel_[gn]pu_plugin.so \
           openvino/libs/libopenvino_*tensorflow*_frontend.so* openvino/libs/libopenvino_p*_frontend.so* \
           openvino/libs/libopenvino_jax_frontend.so* openvino/libs/libopenvino_gguf_frontend.so* \
 && find scipy numpy -type d -name tests -prune -exec rm -rf {} +

COPY byoc_images /src/byoc_images
COPY byoc_contract /src/byoc_contract
COPY byoc_machine /src/byoc_machine
COPY byoc_openvino /src/byoc_openvino
COPY serve /src/serve
COPY pyproject.toml README.md /src/
# `serve` is what SageMaker runs. sagemaker-inference writes the MMS configuration to /etc/sagemaker-mms.properties.
RUN pip install --no-deps --no-cache-dir /src && rm -rf /src \
 && ln -sf /usr/local/bin/byoc-serve /usr/local/bin/serve \
 && python -c "import serve.factory, serve.app, serve.mme, serve.mms_service, onnxruntime, openvino; print('openvino', openvino.__version__)" \
 && java -version \
 && useradd --system --create-home --home-dir /home/model-server model-server \
 && touch /etc/sagemaker-mms.properties && chown model-server /etc/sagemaker-mms.properties

# No USER: SageMaker starts the container as root and extracts model.tar.gz as root with the archive's own modes.
# `serve` reads what the service user cannot (serve.privileges), then drops to model-server before serving.
WORKDIR /home/model-server
EXPOSE 8080
CMD ["serve"]
