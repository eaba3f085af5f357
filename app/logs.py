"""Structured logs: one JSON object per line, every value bounded so hostile input cannot amplify the log."""

from __future__ import annotations

import datetime
import json
import logging
import sys
from typing import Any, Mapping

_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime"}

MAX_VALUE_CHARS = 1024
"""A logged string (an id, a name, a path, an error) longer than this is cut, and says how long it was."""
MAX_ENTRIES = 32
"""Items of a logged map or list (a request's parameters, say); the rest are counted, not shown."""
MAX_MESSAGE_CHARS = 4 * MAX_VALUE_CHARS
MAX_TRACEBACK_CHARS = 16 * MAX_VALUE_CHARS


def bounded(value: Any, limit: int = MAX_VALUE_CHARS) -> Any:
    """value with every string in it cut to limit characters and every collection to MAX_ENTRIES items."""
    if isinstance(value, str):
        return value if len(value) <= limit else f"{value[:limit]}…[truncated, {len(value)} chars in all]"
    if isinstance(value, bytes):
        return bounded(value.decode(errors="replace"), limit)
    if isinstance(value, Mapping):
        items = list(value.items())
        shown = {bounded(str(key), limit): bounded(item, limit) for key, item in items[:MAX_ENTRIES]}
        if len(items) > MAX_ENTRIES:
            shown["…"] = f"{len(items) - MAX_ENTRIES} more entries"
        return shown
    if isinstance(value, (list, tuple, set, frozenset)):
        listed = [bounded(item, limit) for item in list(value)[:MAX_ENTRIES]]
        if len(value) > MAX_ENTRIES:
            listed.append(f"…{len(value) - MAX_ENTRIES} more items")
        return listed
    return value


def _message(record: logging.LogRecord) -> str:
    args = record.args
    if args:
        cut: Any = {key: bounded(item) for key, item in args.items()} if isinstance(args, Mapping) else tuple(bounded(a) for a in args)
        try:
            message = str(record.msg) % cut
        except (TypeError, ValueError):
            message = record.getMessage()
    else:
        message = str(record.msg)
    return str(bounded(message, MAX_MESSAGE_CHARS))


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": datetime.datetime.fromtimestamp(record.created, datetime.timezone.utc).isoformat(
                timespec="milliseconds"
            ),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": _message(record),
        }
        entry.update({k: bounded(v) for k, v in vars(record).items() if k not in _STANDARD})
        if record.exc_info:
            entry["error"] = bounded(self.formatException(record.exc_info), MAX_TRACEBACK_CHARS)
        return json.dumps(entry, default=lambda other: bounded(str(other)))


def configure(level: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
