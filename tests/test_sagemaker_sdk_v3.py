"""The SageMaker Python SDK v3, as users write it today, driving both images on this machine.

``ModelTrainer(training_mode=Mode.LOCAL_CONTAINER)`` trains our training image on real Fashion-MNIST with local channels
(``InputData`` takes a local path) and hyperparameters; the job's output.tar.gz carries the in-job rules' verdicts.
SDK v3's ``ModelBuilder(mode=Mode.LOCAL_CONTAINER)`` cannot start a bring-your-own serving image (it pulls the image
from a registry, and with no ``model_server`` it starts no container; docs/sagemaker.md), so the endpoint runs through
the SDK v3 path that does: ``sagemaker.core.local.LocalSession``'s CreateModel / CreateEndpointConfig / CreateEndpoint
and its runtime client's InvokeEndpoint, with the JPEG bytes.
"""

import io
import json
import os
import time

import fashion_mnist
import pytest
from aws_stand_in import free_port
from PIL import Image
from sdk_support import ROLE, LoopbackPort, sdk_environment

pytestmark = pytest.mark.container
sagemaker = pytest.importorskip("sagemaker.train", reason="SDK v3 is part of the dev extra")


@pytest.fixture
def v3_environment(tmp_path, monkeypatch):
    for key, value in sdk_environment(tmp_path / "sdk").items():
        if os.environ.get(key) != value:
            monkeypatch.setenv(key, value)
    monkeypatch.setenv(
        "AWS_ENDPOINT_URL", "http://127.0.0.1:9"
    )  # nothing listens: any AWS API call would fail, none may leave the machine


# delete_endpoint stops the container under the SDK's serving thread, which then raises that `docker compose up` exited
@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_model_trainer_fits_and_local_session_serves_a_jpeg(
    v3_environment, train_image, serve_image, fashion, tmp_path
):
    from sagemaker.core.local import LocalSession
    from sagemaker.train import ModelTrainer
    from sagemaker.train.configs import Compute, InputData
    from sagemaker.train.model_trainer import Mode

    from sagemaker_launch.job_output import safe_extract, summarise

    hyperparameters = {
        "model": "resnet18",
        "pretrained": "none",
        "image-size": 32,
        "batch-size": 32,
        "epochs": 2,
        "workers": 0,
    }
    trainer = ModelTrainer(
        training_image=train_image,
        training_mode=Mode.LOCAL_CONTAINER,
        compute=Compute(instance_type="local_cpu", instance_count=1),
        role=ROLE,
        hyperparameters=hyperparameters,
        local_container_root=str(tmp_path / "job"),
        input_data_config=[
            InputData(channel_name=split, data_source=str(fashion / split)) for split in ("train", "valid", "test")
        ],
        environment={"SM_STUDIO_LOCAL_MODE": "true"},
    )
    started = time.perf_counter()
    trainer.train(wait=True, logs=False)
    fit_seconds = time.perf_counter() - started
    artifacts = tmp_path / "job" / "compressed_artifacts"
    assert (artifacts / "model.tar.gz").is_file()
    safe_extract(artifacts / "output.tar.gz", tmp_path / "output")  # what SageMaker uploads as output.tar.gz
    assert not list((tmp_path / "output").rglob("*.tfevents"))  # the rules' tensors stay out of the upload
    verdicts = summarise(tmp_path / "output")
    assert "in-job Debugger rules (0 found issues):" in verdicts and "profiling report: " in verdicts, verdicts

    session = LocalSession()
    port = LoopbackPort(free_port())
    session.config = {"local": {"local_code": True, "serving_port": port, "container_root": str(tmp_path / "serving")}}
    (tmp_path / "serving").mkdir()
    client, runtime = session.sagemaker_client, session.sagemaker_runtime_client
    started = time.perf_counter()
    client.create_model(
        ModelName="byoc-v3",
        PrimaryContainer={
            "Image": serve_image,
            "ModelDataUrl": f"file://{artifacts / 'model.tar.gz'}",
            "Environment": {},
        },
        ExecutionRoleArn=ROLE,
    )
    client.create_endpoint_config(
        EndpointConfigName="byoc-v3",
        ProductionVariants=[
            {"VariantName": "AllTraffic", "ModelName": "byoc-v3", "InitialInstanceCount": 1, "InstanceType": "local"}
        ],
    )
    client.create_endpoint(EndpointName="byoc-v3", EndpointConfigName="byoc-v3")
    deploy_seconds = time.perf_counter() - started
    try:
        jpeg = io.BytesIO()
        Image.open(sorted((fashion / "test" / "Trouser").glob("*.png"))[0]).convert("RGB").save(
            jpeg, "JPEG", quality=95
        )
        started = time.perf_counter()
        response = runtime.invoke_endpoint(
            EndpointName="byoc-v3", Body=jpeg.getvalue(), ContentType="image/jpeg", Accept="application/json"
        )
        predict_seconds = time.perf_counter() - started
        answer = json.loads(response["Body"].read())
    finally:
        client.delete_endpoint(EndpointName="byoc-v3")
    top = answer["predictions"][0]["top_k"]
    assert len(top) == 5 and {r["label"] for r in top} <= set(fashion_mnist.CLASSES)
    assert [r["probability"] for r in top] == sorted((r["probability"] for r in top), reverse=True)
    shown = ", ".join(f"{r['label']} {r['probability']:.3f}" for r in top[:3])
    print(
        f"SDK v3: ModelTrainer fit {fit_seconds:.1f} s, local endpoint {deploy_seconds:.1f} s, first prediction "
        f"{predict_seconds:.2f} s; "
        f"a Trouser photo -> {shown}\n{verdicts}"
    )
