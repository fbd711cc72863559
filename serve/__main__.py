"""``python -m serve`` (the image's ``serve`` command): uvicorn on SAGEMAKER_BIND_TO_PORT."""
import uvicorn

from serve.logs import LOG_CONFIG
from serve.settings import Settings


def main() -> None:
    settings = Settings.from_env()
    uvicorn.run(
        "serve.factory:app_from_env", factory=True, host="0.0.0.0", port=settings.port,
        workers=1 if settings.multi_model else settings.workers,  # MME: MMS runs SAGEMAKER_MODEL_SERVER_WORKERS per model
        timeout_graceful_shutdown=settings.timeout_seconds, log_config=LOG_CONFIG,
    )  # fmt: skip


if __name__ == "__main__":
    main()
