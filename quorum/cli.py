"""The `quorum` command: run, migrate, sandbox, check-config, new-api-key."""

from __future__ import annotations

import argparse
import asyncio
import logging
import secrets
import signal
import string
import sys

from bot.policy import Policy, load_policy, new_api_key
from bot.settings import ConfigError, Settings, load_settings

log = logging.getLogger("quorum")

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
callback_url_prefixes = ["http://127.0.0.1:"]

[teams.platform.policy.critical]
required_approvals = 2
reject_threshold = 1
ttl_seconds = 3600
escalate_after_seconds = 900
"""


def _configure_logging(level: str) -> None:
    logging.basicConfig(
        level=level.upper(),
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
        stream=sys.stderr,
    )
    # aiogram's session logs full request URLs, which contain the bot token.
    logging.getLogger("aiogram.event").setLevel(logging.WARNING)
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)


def load_all() -> tuple[Settings, Policy]:
    settings = load_settings()
    settings.require_runnable()
    return settings, load_policy(settings.policy_file)


async def _serve(settings: Settings, policy: Policy, banner: str | None = None) -> None:
    from quorum.app import Quorum, settle_heap

    app = Quorum(settings, policy)
    await app.start()
    settle_heap()
    if banner:
        print(banner, flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await app.stop()


def cmd_run(_: argparse.Namespace) -> int:
    settings, policy = load_all()
    _configure_logging(settings.log_level)
    from quorum.app import run_loop

    run_loop(_serve(settings, policy))
    return 0


def cmd_migrate(_: argparse.Namespace) -> int:
    from quorum.app import run_migrations
    from quorum.embedded import start_embedded_postgres

    settings = load_settings()
    _configure_logging(settings.log_level)
    url = settings.database_url or start_embedded_postgres(settings.data_dir)
    run_migrations(url)
    print("database is at the newest schema")
    return 0


def cmd_check_config(_: argparse.Namespace) -> int:
    settings, policy = load_all()
    teams = ", ".join(
        f"{t.name} ({len(t.approvers)} approvers, {len(t.chat_ids)} chats)"
        for t in policy.teams.values()
    )
    print(f"configuration is valid: mode {settings.telegram_mode}; teams: {teams}")
    return 0


def cmd_new_api_key(args: argparse.Namespace) -> int:
    key, line = new_api_key(args.name)
    print(f"API key (give it to the service; it is not stored anywhere): {key}")
    print(f"Paste into the team's api_keys in the policy file:\n  {line}")
    return 0


def _random_token() -> str:
    alphabet = string.ascii_letters + string.digits + "_-"
    return "7000000001:" + "".join(secrets.choice(alphabet) for _ in range(35))


async def _sandbox(args: argparse.Namespace) -> None:
    from bot.emulator import EmulatorClient, TelegramEmulator

    base = load_settings()
    data_dir = base.data_dir
    data_dir.mkdir(parents=True, exist_ok=True)
    emulator = TelegramEmulator(enforce_limits=True)
    emu_url = await emulator.start("127.0.0.1", args.emulator_port)
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
    port = args.port
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
    http = f"http://127.0.0.1:{port}"
    banner = f"""
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
    try:
        await _serve(settings, policy, banner)
    finally:
        await emulator.stop()


def cmd_sandbox(args: argparse.Namespace) -> int:
    _configure_logging(load_settings().log_level)
    from quorum.app import run_loop

    run_loop(_sandbox(args))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="quorum", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("run", help="serve the HTTP API and Telegram (webhook or polling)").set_defaults(
        func=cmd_run
    )
    sub.add_parser("migrate", help="upgrade the database to the newest schema").set_defaults(
        func=cmd_migrate
    )
    sb = sub.add_parser("sandbox", help="everything on this machine, with a Telegram emulator")
    sb.add_argument("--port", type=int, default=8080)
    sb.add_argument("--emulator-port", type=int, default=8081)
    sb.set_defaults(func=cmd_sandbox)
    sub.add_parser("check-config", help="validate settings and the policy file").set_defaults(
        func=cmd_check_config
    )
    key = sub.add_parser("new-api-key", help="print a fresh API key and its policy line")
    key.add_argument("name")
    key.set_defaults(func=cmd_new_api_key)
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except ConfigError as exc:
        print(f"quorum: configuration error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
