"""Log setup for `rmserve serve`: one JSON object per line (or plain text), uvicorn's included."""

from __future__ import annotations

import logging
import sys

from pythonjsonlogger.core import RESERVED_ATTRS
from pythonjsonlogger.json import JsonFormatter

_FIELDS = {"asctime": "time", "levelname": "level", "name": "logger"}
_DROPPED = [*RESERVED_ATTRS, "color_message"]  # uvicorn's ANSI-coloured copy of the message


def configure_logging(level: str, log_format: str) -> None:
    """Route every logger (rmserve's and uvicorn's) through one stderr handler."""
    handler = logging.StreamHandler(sys.stderr)
    if log_format == "json":
        formatter: logging.Formatter = JsonFormatter(
            "{asctime}{levelname}{name}{message}", style="{", rename_fields=_FIELDS,
            reserved_attrs=_DROPPED,
        )
    else:
        formatter = logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s")
    handler.setFormatter(formatter)
    logging.basicConfig(level=level.upper(), handlers=[handler], force=True)
    for name in ("uvicorn", "uvicorn.error"):
        uvicorn_logger = logging.getLogger(name)
        uvicorn_logger.handlers.clear()
        uvicorn_logger.propagate = True
