"""The SageMaker Python SDK v2 in local mode, a real client no one here wrote, driving both images end to end.

Estimator.fit with our training image on real Fashion-MNIST (file:// channels), Model.deploy with our serving image,
Predictor.predict with JPEG bytes, and a local batch transform over a folder of images.
"""
import io
import json
import shutil
import time

import pytest
from PIL import Image

import fashion_mnist
from aws_stand_in import CREDENTIALS, free_port

pytestmark = pytest.mark.container

ROLE = "arn:aws:iam::123456789012:role/byoc-sagemaker"
TELEMETRY_OFF = "SchemaVersion: '1.0'\nSageMaker:\n  PythonSDK:\n    Modules:\n      TelemetryOptOut: true\n"


class LoopbackPort(int):
    """The SDK's serving port: a number to the SDK's HTTP client, ``127.0.0.1:<port>`` in the compose file it writes.

    Local mode publishes the serving container on every interface; this keeps it on loopback, as this project's
    containers always are.
    """

    def __str__(self) -> str:
        return f"127.0.0.1:{int(self)}"


@pytest.fixture
def local_session(tmp_path, monkeypatch):
    (tmp_path / "sdk.yaml").write_text(TELEMETRY_OFF)
    for key, value in {**CREDENTIALS, "SAGEMAKER_USER_CONFIG_OVERRIDE": str(tmp_path / "sdk.yaml"), "SAGEMAKER_SUPPRESS_V2_WARNING": "1"}.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    from sagemaker.local import LocalSession

    session = LocalSession()
    session.config = {"local": {"local_code": True, "serving_port": LoopbackPort(free_port()), "container_root": str(tmp_path / "containers")}}
    (tmp_path / "containers").mkdir()
    return session


def test_fit_deploy_predict_and_transform_in_local_mode(local_session, train_image, serve_image, fashion, tmp_path):
    from sagemaker.deserializers import JSONDeserializer
    from sagemaker.estimator import Estimator
    from sagemaker.model import Model
    from sagemaker.predictor import Predictor
    from sagemaker.serializers import IdentitySerializer

    data = shutil.copytree(fashion, tmp_path / "data")
    hyperparameters = {"model": "resnet18", "pretrained": "none", "image-size": 32, "batch-size": 32, "epochs": 3, "workers": 0}
    estimator = Estimator(image_uri=train_image, role=ROLE, instance_count=1, instance_type="local", sagemaker_session=local_session,
                          output_path=f"file://{tmp_path}/output", hyperparameters=hyperparameters)  # fmt: skip
    started = time.perf_counter()
    estimator.fit({split: f"file://{data / split}" for split in ("train", "valid", "test")}, wait=True, logs=True)
    fit_seconds = time.perf_counter() - started
    assert estimator.model_data == f"file://{tmp_path}/output/model.tar.gz"

    model = Model(image_uri=serve_image, model_data=estimator.model_data, role=ROLE, sagemaker_session=local_session)
    started = time.perf_counter()
    model.deploy(initial_instance_count=1, instance_type="local", endpoint_name="byoc-local-endpoint")
    deploy_seconds = time.perf_counter() - started
    predictor = Predictor("byoc-local-endpoint", sagemaker_session=local_session, serializer=IdentitySerializer("image/jpeg"), deserializer=JSONDeserializer())
    try:
        jpeg = io.BytesIO()
        Image.open(sorted((data / "test" / "Trouser").glob("*.png"))[0]).convert("RGB").save(jpeg, "JPEG", quality=95)
        started = time.perf_counter()
        answer = predictor.predict(jpeg.getvalue())
        predict_seconds = time.perf_counter() - started
    finally:
        predictor.delete_endpoint()
    top = answer["predictions"][0]["top_k"]
    assert len(top) == 5 and {r["label"] for r in top} <= set(fashion_mnist.CLASSES)
    assert [r["probability"] for r in top] == sorted((r["probability"] for r in top), reverse=True) and 0 < sum(r["probability"] for r in top) <= 1.0001
    shown = ", ".join(f"{r['label']} {r['probability']:.3f}" for r in top[:3])
    print(f"local mode: fit {fit_seconds:.1f} s, deploy {deploy_seconds:.1f} s, first prediction {predict_seconds:.2f} s; a Trouser photo -> {shown}")

    transformer = model.transformer(instance_count=1, instance_type="local", output_path=f"file://{tmp_path}/transform", accept="application/json",
                                    strategy="SingleRecord", assemble_with="None")  # fmt: skip
    started = time.perf_counter()
    transformer.transform(f"file://{data / 'test' / 'Bag'}", content_type="application/x-image", split_type=None, wait=True, logs=False)
    images = sorted(p.name for p in (data / "test" / "Bag").glob("*.png"))
    outputs = sorted(p.name for p in (tmp_path / "transform").iterdir())
    assert outputs == [f"{name}.out" for name in images]
    labels = [json.loads((tmp_path / "transform" / name).read_text())["predictions"][0]["label"] for name in outputs]
    assert set(labels) <= set(fashion_mnist.CLASSES)
    print(f"local batch transform: {len(outputs)} images in {time.perf_counter() - started:.1f} s, {labels.count('Bag')} labelled Bag")
