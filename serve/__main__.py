"""``python -m serve`` (the image's ``serve`` command): uvicorn on SAGEMAKER_BIND_TO_PORT, as the service user, with
SIGTERM draining (``serve.shutdown``)."""

import logging.config
import os

import uvicorn

from byoc_machine import cores_explained
from serve import privileges
from serve.logs import LOG_CONFIG
from serve.settings import Settings
from serve.shutdown import DrainingServer, run_workers

SHUTDOWN_SECONDS = 3  # what uvicorn may take after draining: closing connections, the lifespan's shutdown


def main() -> None:
    logging.config.dictConfig(LOG_CONFIG)
    settings = Settings.from_env()
    logging.getLogger("serve").info(
        "%d model thread(s), %d decode thread(s): %s",
        settings.threads,
        settings.worker_threads,
        "SERVE_THREADS" if "SERVE_THREADS" in os.environ else cores_explained(),
    )
    model_dir = privileges.run_as_service_user(settings)
    os.environ["SAGEMAKER_MODEL_DIR"] = str(model_dir)  # the app (and each worker) reads its settings again
    config = uvicorn.Config(
        "serve.factory:app_from_env",
        factory=True,
        host="0.0.0.0",
        port=settings.port,
        timeout_graceful_shutdown=SHUTDOWN_SECONDS,
        log_config=LOG_CONFIG,
    )
    workers = 1 if settings.multi_model else settings.workers  # MME: MMS runs SAGEMAKER_MODEL_SERVER_WORKERS per model
    if workers == 1:
        DrainingServer(config, settings.shutdown_grace_seconds).run()
    else:
        run_workers(config, settings.shutdown_grace_seconds, workers)


if __name__ == "__main__":
    main()
