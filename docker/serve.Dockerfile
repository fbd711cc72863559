# The byoc-vision serving image: SageMaker endpoint contract, ONNX Runtime on the CPU, no torch.
#
#   docker build -f docker/serve.Dockerfile -t byoc-vision-serve .
#   docker run --rm -p 127.0.0.1:8080:8080 -v $PWD/model:/opt/ml/model:ro byoc-vision-serve serve
FROM python:3.11-slim
LABEL org.opencontainers.image.title="byoc-vision-serve" \
      org.opencontainers.image.description="Serves byoc-vision image classifiers under the SageMaker endpoint contract" \
      org.opencontainers.image.source="https://github.com/byoc-vision/byoc-vision" \
      org.opencontainers.image.licenses="Apache-2.0" \
      com.amazonaws.sagemaker.capabilities.accept-bind-to-port=true
ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# Dependencies of pyproject's `serve` extra first, so code changes do not reinstall them.
COPY pyproject.toml README.md /src/
RUN --mount=type=cache,target=/root/.cache/pip \
    mkdir -p /src/serve && touch /src/serve/__init__.py \
 && pip install "/src[serve]" \
 && pip uninstall -y byoc-vision && rm -rf /src

COPY byoc_images /src/byoc_images
COPY serve /src/serve
COPY pyproject.toml README.md /src/
# `serve` is what SageMaker runs.
RUN pip install --no-deps --no-cache-dir /src && rm -rf /src \
 && ln -sf /usr/local/bin/byoc-serve /usr/local/bin/serve \
 && python -c "import serve.app, onnxruntime; print('onnxruntime', onnxruntime.__version__)" \
 && useradd --system --no-create-home model-server

USER model-server
EXPOSE 8080
CMD ["serve"]
