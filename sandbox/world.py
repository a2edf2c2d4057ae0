"""`quorum sandbox`: the emulator with a demo team, then Quorum on it, and a banner to paste."""

from __future__ import annotations

import secrets
import string

from bot.policy import load_policy, new_api_key
from bot.settings import load_settings
from quorum.app import serve
from sandbox.emulator import EmulatorClient, TelegramEmulator

SANDBOX_CHAT = -1001000000001
SANDBOX_USERS = {1001: "alice", 1002: "bob", 1003: "carol"}
SANDBOX_POLICY = """\
# Written by `quorum sandbox`: one team, two approvers, one onlooker.
timezone = "UTC"

[teams.platform]
chat_ids = [{chat}]
approvers = [
  {{ telegram_id = 1001, name = "alice", roles = ["sre"] }},
  {{ telegram_id = 1002, name = "bob", roles = ["sre", "lead"] }},
]
api_keys = [{key_line}]
callback_url_prefixes = ["http://127.0.0.1:*/"]

[teams.platform.policy.critical]
required_approvals = 2
reject_threshold = 1
ttl_seconds = 3600
escalate_after_seconds = 900
"""


def _random_token() -> str:
    alphabet = string.ascii_letters + string.digits + "_-"
    return "7000000001:" + "".join(secrets.choice(alphabet) for _ in range(35))


async def run_sandbox(port: int, emulator_port: int) -> None:
    """Start the emulator with the demo world, then Quorum on it, until Ctrl-C."""
    base = load_settings()
    data_dir = base.data_dir
    data_dir.mkdir(parents=True, exist_ok=True)
    emulator = TelegramEmulator(enforce_limits=True)
    emu_url = await emulator.start("127.0.0.1", emulator_port)
    token = _random_token()
    async with EmulatorClient(emu_url) as emu:
        await emu.add_bot(token, username="quorum_sandbox_bot", first_name="Quorum")
        for uid, name in SANDBOX_USERS.items():
            await emu.add_user(uid, name.title(), username=name)
        await emu.add_chat(
            SANDBOX_CHAT, "supergroup", title="platform-oncall", members=list(SANDBOX_USERS)
        )
    api_key, key_line = new_api_key("sandbox")
    policy_path = data_dir / "sandbox-policy.toml"
    policy_path.write_text(SANDBOX_POLICY.format(chat=SANDBOX_CHAT, key_line=key_line))
    secret = secrets.token_urlsafe(24).replace("-", "_")
    settings = load_settings(
        telegram_token=token,
        telegram_api_url=emu_url,
        telegram_mode="webhook",
        webhook_url=f"http://127.0.0.1:{port}/telegram/webhook",
        webhook_secret=secret,
        token_secret=secrets.token_urlsafe(48),
        policy_file=policy_path,
        http_port=port,
        database_url=base.database_url,
        redis_url=base.redis_url,
        data_dir=data_dir,
        log_level=base.log_level,
    )
    policy = load_policy(policy_path)
    banner = _banner(f"http://127.0.0.1:{port}", emu_url, api_key)
    try:
        await serve(settings, policy, banner)
    finally:
        await emulator.stop()


def _banner(http: str, emu_url: str, api_key: str) -> str:
    """What to paste to act as the demo users."""
    return f"""
Quorum sandbox is up.
  Bot HTTP API:      {http}   (health: {http}/readyz)
  Telegram emulator: {emu_url}   (control API under /_emulator/)
  Team chat:         platform-oncall ({SANDBOX_CHAT})
  Users:             alice (1001, approver), bob (1002, approver), carol (1003, not an approver)
  Sandbox API key:   {api_key}

Act as a Telegram user (in another terminal):
  curl -s -XPOST {emu_url}/_emulator/chats/{SANDBOX_CHAT}/send \\
       -H 'Content-Type: application/json' -d '{{"from_id": 1001, "text": "/start"}}'
  curl -s {emu_url}/_emulator/chats/{SANDBOX_CHAT}/messages

Ask for an approval, then tap a button as alice:
  curl -s -XPOST {http}/api/v1/approvals -H 'Authorization: Bearer {api_key}' \\
       -H 'Content-Type: application/json' \\
       -d '{{"action": "restart", "target": "deploy/api", "risk_level": "low", \\
            "requested_by": "ci"}}'
  curl -s -XPOST {emu_url}/_emulator/chats/{SANDBOX_CHAT}/messages/<message_id>/tap \\
       -H 'Content-Type: application/json' \\
       -d '{{"from_id": 1001, "button_text": "✅ Approve", "wait": 5}}'
Stop with Ctrl-C.
"""
