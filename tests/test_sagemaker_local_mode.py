"""The SageMaker Python SDK v2 in local mode, a real client no one here wrote, driving both images end to end.

Estimator.fit with our training image on real Fashion-MNIST (file:// channels), Model.deploy with our serving image,
Predictor.predict with JPEG bytes, and a local batch transform over a folder of images. SDK v2 runs in its own cached
virtual environment (this one holds SDK v3, see test_sagemaker_sdk_v3.py).
"""

import json
import shutil
import subprocess

import fashion_mnist
import pytest
from aws_stand_in import free_port
from conftest import REPO
from PIL import Image
from sdk_support import sdk_environment, sdk_v2_python

pytestmark = pytest.mark.container


def test_fit_deploy_predict_and_transform_in_local_mode(train_image, serve_image, fashion, tmp_path):
    python = sdk_v2_python()
    data = shutil.copytree(fashion, tmp_path / "data")
    jpeg = tmp_path / "trouser.jpg"
    Image.open(sorted((data / "test" / "Trouser").glob("*.png"))[0]).convert("RGB").save(jpeg, "JPEG", quality=95)
    result_file = tmp_path / "result.json"
    command = [
        str(python),
        str(REPO / "tests" / "sdk_v2_local_mode.py"),
        train_image,
        serve_image,
        str(data),
        str(tmp_path),
        str(free_port()),
        str(jpeg),
        str(result_file),
    ]
    run = subprocess.run(
        command, cwd=tmp_path, env=sdk_environment(tmp_path / "sdk"), capture_output=True, text=True, timeout=1500
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    result = json.loads(result_file.read_text())
    assert result["model_data"] == f"file://{tmp_path}/output/model.tar.gz"

    top = result["answer"]["predictions"][0]["top_k"]
    assert len(top) == 5 and {r["label"] for r in top} <= set(fashion_mnist.CLASSES)
    assert [r["probability"] for r in top] == sorted((r["probability"] for r in top), reverse=True) and 0 < sum(
        r["probability"] for r in top
    ) <= 1.0001
    shown = ", ".join(f"{r['label']} {r['probability']:.3f}" for r in top[:3])
    print(
        f"SDK v2 local mode: fit {result['fit_seconds']:.1f} s, deploy {result['deploy_seconds']:.1f} s, "
        f"first prediction {result['predict_seconds']:.2f} s; a Trouser photo -> {shown}"
    )

    images = sorted(p.name for p in (data / "test" / "Bag").glob("*.png"))
    outputs = sorted(p.name for p in (tmp_path / "transform").iterdir())
    assert outputs == [f"{name}.out" for name in images]
    labels = [json.loads((tmp_path / "transform" / name).read_text())["predictions"][0]["label"] for name in outputs]
    assert set(labels) <= set(fashion_mnist.CLASSES)
    print(
        f"SDK v2 local batch transform: {len(outputs)} images in {result['transform_seconds']:.1f} s, "
        f"{labels.count('Bag')} labelled Bag"
    )
