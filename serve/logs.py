"""Logging for the server: one line per event, health checks kept out of the access log."""

import logging


class QuietPing(logging.Filter):
    """Health checks arrive every few seconds; their access lines are not worth a person's time."""

    def filter(self, record: logging.LogRecord) -> bool:
        return '"GET /ping ' not in record.getMessage()


LOG_CONFIG = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {"quiet_ping": {"()": "serve.logs.QuietPing"}},
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {
        "default": {"class": "logging.StreamHandler", "formatter": "plain", "stream": "ext://sys.stderr"},
        "access": {
            "class": "logging.StreamHandler",
            "formatter": "plain",
            "stream": "ext://sys.stderr",
            "filters": ["quiet_ping"],
        },
    },
    "loggers": {
        "uvicorn": {"handlers": ["default"], "level": "INFO", "propagate": False},
        "uvicorn.access": {"handlers": ["access"], "level": "INFO", "propagate": False},
        "serve": {"handlers": ["default"], "level": "INFO", "propagate": False},
    },
}
