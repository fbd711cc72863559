"""Ray Serve 2.60 serving the artifact: a FastAPI ingress deployment with ``@serve.batch``, SageMaker's routes.

``python -m bench.peers.ray_app`` starts a local Ray instance and Serve on 0.0.0.0:8080 with ``GET /ping`` and
``POST /invocations`` (JPEG in, top-5 JSON out). ``PEER_MODE`` picks the torch mode (``bench.peers.torch_model``);
``PEER_CONFIG=default`` keeps Ray's defaults (one replica with ``num_cpus=1``, so Ray pins torch to one thread;
``@serve.batch()`` with its default size and wait), ``best`` gives the replica every core and batches of up to 16.
"""

# no `from __future__ import annotations`: FastAPI must see the real `Request` class through Ray's ingress wrapper
import io
import json
import os
import time
from pathlib import Path

import ray
import torch
from fastapi import FastAPI, Request, Response
from PIL import Image
from ray import serve

from bench.peers import torch_model

app = FastAPI()
BEST = os.environ.get("PEER_CONFIG", "default") == "best"
CORES = os.cpu_count() or 1


@serve.deployment(ray_actor_options={"num_cpus": CORES} if BEST else {})
@serve.ingress(app)
class Classifier:
    def __init__(self, model_dir: str) -> None:
        model, info = torch_model.load(Path(model_dir))
        self.classes = info["classes"]
        self.transform = torch_model.eval_transform(info)
        self.forward = torch_model.prepare(model, torch_model.mode_from_env())

    @serve.batch(**({"max_batch_size": 16, "batch_wait_timeout_s": 0.01} if BEST else {}))
    async def predict(self, images: list[torch.Tensor]) -> list[list[dict]]:
        top = torch.topk(torch.softmax(self.forward(torch.stack(images)), dim=1), 5)
        return [
            [{"label": self.classes[i], "probability": p} for p, i in zip(ps, ids, strict=False)]
            for ps, ids in zip(top.values.tolist(), top.indices.tolist(), strict=False)
        ]

    @app.get("/ping")
    async def ping(self) -> dict:
        return {"status": "Healthy"}

    @app.post("/invocations")
    async def invocations(self, request: Request) -> Response:
        image = self.transform(Image.open(io.BytesIO(await request.body())).convert("RGB"))
        return Response(json.dumps(await self.predict(image)), media_type="application/json")


def main() -> None:
    ray.init(num_cpus=CORES, include_dashboard=False, object_store_memory=256 * 1024 * 1024)
    serve.start(http_options={"host": "0.0.0.0", "port": 8080})
    serve.run(Classifier.bind(os.environ.get("SM_MODEL_DIR", "/opt/ml/model")), route_prefix="/")
    while True:
        time.sleep(3600)


if __name__ == "__main__":
    main()
