"""Log setup for `rmserve serve`: one JSON object per line (or plain text), uvicorn's included."""

from __future__ import annotations

import logging
import re
import sys

from pythonjsonlogger.core import RESERVED_ATTRS
from pythonjsonlogger.json import JsonFormatter

_FIELDS = {"asctime": "time", "levelname": "level", "name": "logger"}
_DROPPED = [*RESERVED_ATTRS, "color_message"]  # uvicorn's ANSI-coloured copy of the message
# Not fields of the line: Python 3.12's asyncio task name, when a record has one.
_NOT_FIELDS = {*_DROPPED, "taskName"}
_BARE_VALUE = re.compile(r"[^\s\"=]+")


class TextFormatter(logging.Formatter):
    """The JSON format's fields as text: the message, then each extra field as key=value (quoted
    when it holds spaces, quotes or '='), so that a request line says its status, id and timings
    in either format."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        extras = [f"{key}={_text_value(value)}" for key, value in record.__dict__.items()
                  if key not in _NOT_FIELDS and not key.startswith("_")]
        if not extras:
            return line
        # A traceback, if any, stays at the end, after the fields of its line.
        head, newline, rest = line.partition("\n")
        return f"{head} {' '.join(extras)}{newline}{rest}"


def _text_value(value: object) -> str:
    text = str(value)
    if _BARE_VALUE.fullmatch(text):
        return text
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


class _Role(logging.Filter):
    """Names the process that wrote a line, in a server of several (api-0, engine-1, supervisor)."""

    def __init__(self, role: str) -> None:
        super().__init__()
        self._role = role

    def filter(self, record: logging.LogRecord) -> bool:
        record.role = self._role
        return True


def configure_logging(level: str, log_format: str, role: str | None = None) -> None:
    """Route every logger (rmserve's and uvicorn's) through one stderr handler."""
    handler = logging.StreamHandler(sys.stderr)
    if role is not None:
        handler.addFilter(_Role(role))
    if log_format == "json":
        formatter: logging.Formatter = JsonFormatter(
            "{asctime}{levelname}{name}{message}", style="{", rename_fields=_FIELDS,
            reserved_attrs=_DROPPED,
        )
    else:
        formatter = TextFormatter()
    handler.setFormatter(formatter)
    logging.basicConfig(level=level.upper(), handlers=[handler], force=True)
    for name in ("uvicorn", "uvicorn.error"):
        uvicorn_logger = logging.getLogger(name)
        uvicorn_logger.handlers.clear()
        uvicorn_logger.propagate = True
