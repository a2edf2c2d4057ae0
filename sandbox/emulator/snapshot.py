"""The emulated world saved as JSON and loaded back: a sandbox restart keeps its chats.

Users, chats with their messages and buttons, and each bot's token and next update id (the
bot's store of seen update ids would drop reused ones). Pending updates, callback queries,
webhooks, faults and counters are the running process's and start afresh.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from sandbox.emulator.state import Message
from sandbox.emulator.updates import Updates

VERSION = 1


def snapshot(world: Updates) -> dict[str, Any]:
    return {
        "version": VERSION,
        "callback_seq": world._callback_seq,
        "bots": [
            {
                "token": bot.token,
                "username": bot.user.username,
                "first_name": bot.user.first_name,
                "next_update_id": bot.next_update_id,
            }
            for bot in world.bots.values()
        ],
        "users": [
            {"id": u.id, "first_name": u.first_name, "username": u.username}
            for u in world.users.values()
            if not u.is_bot
        ],
        "chats": [
            {
                "id": c.id,
                "type": c.type,
                "title": c.title,
                "members": sorted(c.members),
                "bot_status": {str(k): v for k, v in c.bot_status.items()},
                "migrated_to": c.migrated_to,
                "migrated_from": c.migrated_from,
                "next_message_id": c.next_message_id,
                "messages": [_message(m) for m in c.messages.values()],
            }
            for c in world.chats.values()
        ],
    }


def _message(m: Message) -> dict[str, Any]:
    return {
        "message_id": m.message_id,
        "from_id": m.from_id,
        "date": m.date,
        "text": m.text,
        "entities": m.entities,
        "reply_markup": m.reply_markup,
        "edit_date": m.edit_date,
        "edits": m.edits,
        "deleted": m.deleted,
        "extra": m.extra,
    }


def restore(world: Updates, data: dict[str, Any]) -> None:
    """Load a snapshot into a freshly started emulator (its own state is replaced)."""
    if data.get("version") != VERSION:
        raise ValueError(f"unknown emulator snapshot version {data.get('version')!r}")
    world._init_state()
    world._callback_seq = int(data.get("callback_seq", 0))  # callback query ids stay unique
    for b in data["bots"]:
        bot = world._register_bot(b["token"], b["username"], b["first_name"])
        bot.next_update_id = int(b["next_update_id"])
    for u in data["users"]:
        world._add_user(int(u["id"]), u["first_name"], u["username"], False)
    for c in data["chats"]:
        chat = world._add_chat(int(c["id"]), c["type"], c["title"], c["members"])
        chat.bot_status = {int(k): v for k, v in c["bot_status"].items()}
        chat.migrated_to, chat.migrated_from = c["migrated_to"], c["migrated_from"]
        chat.next_message_id = int(c["next_message_id"])
        chat.messages = {int(m["message_id"]): Message(chat_id=chat.id, **m) for m in c["messages"]}


def save(world: Updates, path: Path) -> None:
    """Write atomically: a crash mid-write leaves the previous snapshot."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(snapshot(world)))
    tmp.replace(path)


def load(world: Updates, path: Path) -> bool:
    """Restore from `path`; False when there is none yet."""
    if not path.exists():
        return False
    restore(world, json.loads(path.read_text()))
    return True
