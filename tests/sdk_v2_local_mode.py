"""Run under SDK v2's own environment (see sdk_support.sdk_v2_python): Estimator.fit with our training image on file://
channels, Model.deploy with our serving image, Predictor.predict with JPEG bytes, a local batch transform.

    python sdk_v2_local_mode.py TRAIN_IMAGE SERVE_IMAGE DATA_DIR WORK_DIR PORT JPEG RESULT_JSON
"""

import json
import sys
import time
from pathlib import Path

from sdk_support import ROLE, LoopbackPort


def main(train_image: str, serve_image: str, data: str, work: str, port: str, jpeg: str, result_file: str) -> None:
    from sagemaker.deserializers import JSONDeserializer
    from sagemaker.estimator import Estimator
    from sagemaker.local import LocalSession
    from sagemaker.model import Model
    from sagemaker.predictor import Predictor
    from sagemaker.serializers import IdentitySerializer

    work_dir, data_dir = Path(work), Path(data)
    session = LocalSession()
    session.config = {
        "local": {
            "local_code": True,
            "serving_port": LoopbackPort(int(port)),
            "container_root": str(work_dir / "containers"),
        }
    }
    (work_dir / "containers").mkdir(parents=True, exist_ok=True)
    result = {}
    hyperparameters = {
        "model": "resnet18",
        "pretrained": "none",
        "image-size": 32,
        "batch-size": 32,
        "epochs": 3,
        "workers": 0,
    }
    estimator = Estimator(
        image_uri=train_image,
        role=ROLE,
        instance_count=1,
        instance_type="local",
        sagemaker_session=session,
        output_path=f"file://{work_dir}/output",
        hyperparameters=hyperparameters,
    )
    started = time.perf_counter()
    estimator.fit({split: f"file://{data_dir / split}" for split in ("train", "valid", "test")}, wait=True, logs=True)
    result["fit_seconds"], result["model_data"] = time.perf_counter() - started, estimator.model_data

    model = Model(image_uri=serve_image, model_data=estimator.model_data, role=ROLE, sagemaker_session=session)
    started = time.perf_counter()
    model.deploy(initial_instance_count=1, instance_type="local", endpoint_name="byoc-local-endpoint")
    result["deploy_seconds"] = time.perf_counter() - started
    predictor = Predictor(
        "byoc-local-endpoint",
        sagemaker_session=session,
        serializer=IdentitySerializer("image/jpeg"),
        deserializer=JSONDeserializer(),
    )
    try:
        started = time.perf_counter()
        result["answer"] = predictor.predict(Path(jpeg).read_bytes())
        result["predict_seconds"] = time.perf_counter() - started
    finally:
        predictor.delete_endpoint()

    transformer = model.transformer(
        instance_count=1,
        instance_type="local",
        output_path=f"file://{work_dir}/transform",
        accept="application/json",
        strategy="SingleRecord",
        assemble_with="None",
    )
    started = time.perf_counter()
    transformer.transform(
        f"file://{data_dir / 'test' / 'Bag'}",
        content_type="application/x-image",
        split_type=None,
        wait=True,
        logs=False,
    )
    result["transform_seconds"] = time.perf_counter() - started
    Path(result_file).write_text(json.dumps(result))


if __name__ == "__main__":
    main(*sys.argv[1:])
