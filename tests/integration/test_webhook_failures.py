"""The webhook's 503 means "storage unavailable, deliver again", and nothing else: an update
that fails for another reason is kept as failed and answered 200, or Telegram retries it
forever."""

from __future__ import annotations

from typing import Any

from sqlalchemy.engine import make_url

from tests.support import (
    ALICE,
    CHAT,
    Harness,
    QuorumFactory,
    admin_sql,
    db_rows,
    post_update,
    wait_until,
)


def text_update(update_id: int, text: str) -> dict[str, Any]:
    return {
        "update_id": update_id,
        "message": {
            "message_id": 10,
            "date": 1700000000,
            "chat": {"id": CHAT, "type": "supergroup", "title": "platform"},
            "from": {"id": ALICE, "is_bot": False, "first_name": "Alice"},
            "text": text,
        },
    }


async def stored(h: Harness, update_id: int) -> list[tuple[str, str | None]]:
    rows = await db_rows(
        h, "SELECT status, last_error FROM inbound_updates WHERE update_id = $1", update_id
    )
    return [(r["status"], r["last_error"]) for r in rows]


async def test_an_update_postgresql_refuses_is_kept_as_failed_and_answered_200(
    make_quorum: QuorumFactory,
) -> None:
    h = await make_quorum()
    # Valid JSON that jsonb refuses (\u0000 cannot be stored): not an outage, and delivering
    # it again would fail the same way.
    assert (await post_update(h, text_update(41, "hello\u0000world")))[0] == 200
    [(status, error)] = await stored(h, 41)
    assert status == "failed"
    assert error is not None and "UntranslatableCharacterError" in error
    [kept] = await db_rows(
        h, "SELECT payload->>'unstorable_update' AS text FROM inbound_updates WHERE update_id = 41"
    )
    assert "hello\\u0000world" in kept["text"]  # the update as received, for an operator
    failed = h.app.runtime.metrics.registry.get_sample_value("quorum_updates_failed_total")
    assert failed == 1
    # The next update is handled as usual.
    assert (await post_update(h, text_update(42, "hello world")))[0] == 200
    assert await stored(h, 42) == [("done", None)]


async def test_a_storage_outage_still_answers_503(
    make_quorum: QuorumFactory, pg_server_url: str
) -> None:
    h = await make_quorum()
    name = make_url(h.settings.database_url).database
    await admin_sql(pg_server_url, f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
    try:
        await admin_sql(
            pg_server_url,
            f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}'",
        )
        assert (await post_update(h, text_update(51, "during the outage")))[0] == 503
    finally:
        await admin_sql(pg_server_url, f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')

    # Delivered again, as Telegram does, until PostgreSQL is back (each pooled connection
    # the outage closed fails once): then stored and handled once.
    async def delivered() -> bool:
        return (await post_update(h, text_update(51, "during the outage")))[0] == 200

    await wait_until(delivered, 20, what="the update delivered once PostgreSQL is back")
    assert await stored(h, 51) == [("done", None)]
