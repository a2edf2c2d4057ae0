"""Routes and forum topics end to end through the emulator: cards go where the team's routes
send them (a topic of a forum supergroup), votes there count, /where tells the ids, and a
closed topic falls back to General with a note."""

from __future__ import annotations

from typing import Any

from tests.e2e.flows import APPROVE, audit_events_with, card, card_where, create, sql, tap
from tests.support import ALICE, BOB, CHAT, Harness, QuorumFactory, policy_data

FORUM = -1001000000777


async def forum_quorum(make_quorum: QuorumFactory, emu: Any) -> tuple[Harness, int]:
    await emu.add_chat(FORUM, "supergroup", title="ops forum", members=[ALICE, BOB], is_forum=True)
    topic = await emu.create_topic(FORUM, "critical changes", from_id=ALICE)
    data = policy_data()
    data["teams"]["platform"]["routes"] = [
        {
            "chat_id": FORUM,
            "thread_id": topic,
            "match": {"kind": "approval", "risk_level": ["critical"]},
        }
    ]
    return await make_quorum(policy=data), topic


async def texts(h: Harness, chat: int) -> list[str]:
    return [str(m["text"]) for m in await h.bot_messages(chat)]


async def test_a_route_puts_matching_cards_in_a_forum_topic(
    make_quorum: QuorumFactory, emu: Any
) -> None:
    h, topic = await forum_quorum(make_quorum, emu)
    critical = await create(h, risk_level="critical")
    low = await create(h, action="low thing")
    in_topic = await card(h, critical["id"], chat=FORUM)
    assert in_topic["message_thread_id"] == topic
    await card(h, low["id"])  # no route matches: the team's chat, as before
    assert not any(critical["id"] in t for t in await texts(h, CHAT))
    assert not any(low["id"] in t for t in await texts(h, FORUM))
    # Votes on the topic's card count and it is edited in place, in its topic.
    assert "1/2" in (await tap(h, in_topic, ALICE, APPROVE, chat=FORUM))["text"]
    assert "Approved" in (await tap(h, in_topic, BOB, APPROVE, chat=FORUM))["text"]

    final = await card_where(h, critical["id"], lambda m: "APPROVED" in m["text"], chat=FORUM)
    assert final["message_id"] == in_topic["message_id"]
    assert final["message_thread_id"] == topic


async def test_where_answers_with_the_chat_and_topic_ids(
    make_quorum: QuorumFactory, emu: Any
) -> None:
    h, topic = await forum_quorum(make_quorum, emu)
    sent = await h.emu.send_text(FORUM, ALICE, "/where", message_thread_id=topic)

    async def answer() -> dict[str, Any] | None:
        for m in await h.bot_messages(FORUM):
            if m["reply_to_message_id"] == sent["message_id"]:
                return m
        return None

    got = await h.wait_for(answer)
    assert got["message_thread_id"] == topic
    assert f"chat id {FORUM}, topic id {topic}" in got["text"]
    assert f"[[teams.platform.routes]]\nchat_id = {FORUM}\nthread_id = {topic}" in got["text"]
    general = await h.emu.send_text(CHAT, ALICE, "/where")

    async def plain() -> str | None:
        for m in await h.bot_messages(CHAT):
            if m["reply_to_message_id"] == general["message_id"]:
                return str(m["text"])
        return None

    text = await h.wait_for(plain)
    assert f"chat id {CHAT}" in text and "topic id" not in text and "thread_id" not in text


async def test_a_closed_topic_falls_back_to_general_with_a_note(
    make_quorum: QuorumFactory, emu: Any
) -> None:
    h, topic = await forum_quorum(make_quorum, emu)
    await h.emu.close_topic(FORUM, topic)
    req = await create(h, risk_level="critical")
    msg = await card(h, req["id"], chat=FORUM)
    assert msg["message_thread_id"] is None  # General

    async def note() -> dict[str, Any] | None:
        for m in await h.bot_messages(FORUM):
            if m["reply_to_message_id"] == msg["message_id"]:
                return m
        return None

    got = await h.wait_for(note)
    assert f"Topic {topic} is closed or deleted" in got["text"]
    [entry] = await sql(
        h,
        "SELECT chat_id, detail->>'thread_id' AS thread FROM audit_log "
        "WHERE event = 'topic.fallback'",
    )
    assert (entry["chat_id"], entry["thread"]) == (FORUM, str(topic))
    # The card lives in General from now on: votes and edits work there.
    assert "1/2" in (await tap(h, msg, ALICE, APPROVE, chat=FORUM))["text"]
    await h.wait_for(lambda: audit_events_with(h, req["id"], "vote.accepted"))
    await card_where(h, req["id"], lambda m: "Approvals: 1/2" in m["text"], chat=FORUM)


async def test_a_route_follows_its_group_when_it_becomes_a_supergroup(
    make_quorum: QuorumFactory, emu: Any
) -> None:
    group = -4000000123
    await emu.add_chat(group, "group", title="db team", members=[ALICE, BOB])
    data = policy_data()
    data["teams"]["platform"]["routes"] = [{"chat_id": group, "match": {"kind": "approval"}}]
    h = await make_quorum(policy=data)
    new_id = await h.emu.migrate(group, by_user_id=ALICE)

    async def followed() -> Any:
        rows = await sql(h, "SELECT migrated_to FROM chats WHERE id = $1", group)
        return rows and rows[0]["migrated_to"] == new_id

    await h.wait_for(followed)
    req = await create(h)
    msg = await card(h, req["id"], chat=new_id)
    assert "Approved" in (await tap(h, msg, ALICE, APPROVE, chat=new_id))["text"]
    assert not any(req["id"] in t for t in await texts(h, CHAT))
