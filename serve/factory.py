"""``serve.factory:app_from_env``: the app uvicorn runs, single- or multi-model as the environment says."""

from fastapi import FastAPI

from serve.settings import Settings


def app_from_env() -> FastAPI:
    """Factory for uvicorn, configured by the environment (``serve.settings``)."""
    settings = Settings.from_env()
    if settings.multi_model:
        from serve.mme import create_mme_app

        return create_mme_app(settings)
    from serve.app import create_app

    return create_app(settings)
