"""``python -m serve`` (the image's ``serve`` command): uvicorn on SAGEMAKER_BIND_TO_PORT, as the service user, with
SIGTERM draining (``serve.shutdown``)."""
import logging.config
import multiprocessing
import os
import signal

import uvicorn

from serve import privileges
from serve.logs import LOG_CONFIG
from serve.settings import Settings
from serve.shutdown import DrainingServer

SHUTDOWN_SECONDS = 3  # what uvicorn may take after draining: closing connections, the lifespan's shutdown


def main() -> None:
    logging.config.dictConfig(LOG_CONFIG)
    settings = Settings.from_env()
    model_dir = privileges.run_as_service_user(settings)
    os.environ["SAGEMAKER_MODEL_DIR"] = str(model_dir)  # the app (and each worker) reads its settings again
    config = uvicorn.Config(
        "serve.factory:app_from_env", factory=True, host="0.0.0.0", port=settings.port,
        timeout_graceful_shutdown=SHUTDOWN_SECONDS, log_config=LOG_CONFIG,
    )  # fmt: skip
    workers = 1 if settings.multi_model else settings.workers  # MME: MMS runs SAGEMAKER_MODEL_SERVER_WORKERS per model
    if workers == 1:
        DrainingServer(config, settings.shutdown_grace_seconds).run()
    else:
        run_workers(config, settings.shutdown_grace_seconds, workers)


def run_worker(config: uvicorn.Config, grace: float, sockets: list) -> None:
    DrainingServer(config, grace).run(sockets)


def run_workers(config: uvicorn.Config, grace: float, count: int) -> None:
    """``count`` worker processes on one listening socket; SIGTERM is passed on to each (each drains), and this
    process exits once they have all exited."""
    sock = config.bind_socket()
    spawn = multiprocessing.get_context("spawn")
    workers = [spawn.Process(target=run_worker, args=(config, grace, [sock]), name=f"worker-{n}") for n in range(count)]
    for worker in workers:
        worker.start()
    signal.signal(signal.SIGTERM, lambda *_: [w.terminate() for w in workers if w.is_alive()])
    signal.signal(signal.SIGINT, lambda *_: [os.kill(w.pid, signal.SIGINT) for w in workers if w.is_alive()])
    for worker in workers:
        worker.join()


if __name__ == "__main__":
    main()
