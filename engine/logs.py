"""Log lines of a serving process: text or JSON, one line per record, on stderr.

``segops serve`` calls ``configure_logging`` before uvicorn starts (uvicorn's own configuration is
off, so its lines come out in the same format). A record may carry structured ``fields`` (the access
log does): JSON lines hold them as keys, text lines already say them in the message.
"""
from __future__ import annotations

import logging
import sys
import time

import orjson

ACCESS_LOGGER = "segops.access"  # one record per request (api.observe)


_second: list = [None, ""]  # the last whole second formatted: one strftime per second, not per line


def _timestamp(record: logging.LogRecord) -> str:
    second = int(record.created)
    if second != _second[0]:
        _second[:] = [second, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))]
    return f"{_second[1]}.{int(record.msecs):03d}Z"


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line = f"{_timestamp(record)} {record.levelname} {record.name} {record.getMessage()}"
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        doc = {"ts": _timestamp(record), "level": record.levelname, "logger": record.name,
               "message": record.getMessage()}
        fields = getattr(record, "fields", None)
        if fields:
            doc.update(fields)
        if record.exc_info:
            doc["exc_info"] = self.formatException(record.exc_info)
        return orjson.dumps(doc, default=str).decode()


def configure_logging(log_format: str = "text", access_log: bool = True) -> None:
    """Every logger to stderr at INFO in ``log_format``; the access log on or off. Records skip the
    thread and process lookups no line shows (a few microseconds per access line)."""
    logging.logThreads = logging.logProcesses = logging.logMultiprocessing = False
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if log_format == "json" else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)
    logging.getLogger(ACCESS_LOGGER).setLevel(logging.INFO if access_log else logging.WARNING)
