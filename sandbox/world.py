"""`quorum sandbox`: the emulator with a demo team, then Quorum on it, and a banner to paste.

Its API key, bot token and secrets are written under the data directory on the first start and
reused, and the emulated chats are saved there on stop: a restart finds the same world (each
pending request's card still in the chat, the old key still valid).
"""

from __future__ import annotations

import json
import secrets
import string
from dataclasses import asdict, dataclass
from pathlib import Path

from bot.policy import load_policy, new_api_key
from bot.settings import load_settings
from quorum.app import PollingTaken, serve
from sandbox.emulator import EmulatorClient, TelegramEmulator
from sandbox.emulator import snapshot as world_snapshot

SANDBOX_CHAT = -1001000000001
SANDBOX_USERS = {1001: "alice", 1002: "bob", 1003: "carol"}
SECRETS_FILE = "sandbox-secrets.json"
WORLD_FILE = "sandbox-emulator.json"
# Where the banner's commands start and end (tests run exactly these lines).
COMMANDS_START = "Paste into bash (each line works on its own, in this order):"
COMMANDS_END = "Stop with Ctrl-C."
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


@dataclass(frozen=True, slots=True)
class SandboxSecrets:
    api_key: str
    key_line: str
    telegram_token: str
    token_secret: str


def _random_token() -> str:
    alphabet = string.ascii_letters + string.digits + "_-"
    return "7000000001:" + "".join(secrets.choice(alphabet) for _ in range(35))


def sandbox_secrets(data_dir: Path) -> SandboxSecrets:
    """The sandbox's key and secrets: made on the first start, then read back."""
    path = data_dir / SECRETS_FILE
    if path.exists():
        return SandboxSecrets(**json.loads(path.read_text()))
    api_key, key_line = new_api_key("sandbox")
    made = SandboxSecrets(api_key, key_line, _random_token(), secrets.token_urlsafe(48))
    path.touch(mode=0o600)
    path.write_text(json.dumps(asdict(made)))
    return made


async def _populate(emu_url: str, token: str) -> None:
    async with EmulatorClient(emu_url) as emu:
        await emu.add_bot(token, username="quorum_sandbox_bot", first_name="Quorum")
        for uid, name in SANDBOX_USERS.items():
            await emu.add_user(uid, name.title(), username=name)
        await emu.add_chat(
            SANDBOX_CHAT, "supergroup", title="platform-oncall", members=list(SANDBOX_USERS)
        )


async def run_sandbox(port: int, emulator_port: int) -> None:
    """Start the emulator with the demo world, then Quorum on it, until Ctrl-C or SIGTERM."""
    base = load_settings()
    data_dir = base.data_dir
    data_dir.mkdir(parents=True, exist_ok=True)
    kept = sandbox_secrets(data_dir)
    emulator = TelegramEmulator(enforce_limits=True)
    world_file = data_dir / WORLD_FILE
    restored = world_snapshot.load(emulator, world_file)
    emu_url = await emulator.start("127.0.0.1", emulator_port)
    if not restored:
        await _populate(emu_url, kept.telegram_token)
    policy_path = data_dir / "sandbox-policy.toml"
    policy_path.write_text(SANDBOX_POLICY.format(chat=SANDBOX_CHAT, key_line=kept.key_line))
    settings = load_settings(
        telegram_token=kept.telegram_token,
        telegram_api_url=emu_url,
        telegram_mode="polling",
        token_secret=kept.token_secret,
        policy_file=policy_path,
        http_port=port,
        database_url=base.database_url,
        redis_url=base.redis_url,
        data_dir=data_dir,
        log_level=base.log_level,
        log_format=base.log_format,
    )
    policy = load_policy(policy_path)
    banner = _banner(f"http://127.0.0.1:{port}", emu_url, kept.api_key)
    save = True
    try:
        await serve(settings, policy, banner)
    except PollingTaken:
        save = False  # another sandbox owns this world; its snapshot is the one to keep
        raise
    finally:
        if save:
            world_snapshot.save(emulator, world_file)
        await emulator.stop()


def _json_field(name: str) -> str:
    """A pipe stage printing one field of a JSON answer (jq may be absent; python3 is not)."""
    return f"python3 -c 'import json,sys; print(json.load(sys.stdin)[\"{name}\"])'"


def banner_commands(http: str, emu_url: str, api_key: str) -> list[str]:
    """Bash lines, one command each, that walk an approval from request to redeemed token."""
    emu = f"{emu_url}/_emulator/chats/{SANDBOX_CHAT}"
    js = "-H 'Content-Type: application/json'"
    auth = f"-H 'Authorization: Bearer {api_key}'"
    redeem = (
        f"curl -s -w ' (HTTP %{{http_code}})\\n' -XPOST {http}/api/v1/tokens/redeem {auth} {js} "
        """-d '{"token": "'"$TOKEN"'", "action": "restart", "target": "deploy/api"}'"""
    )
    return [
        "# Say /start in the team chat as alice:",
        f"""curl -s -XPOST {emu}/send {js} -d '{{"from_id": 1001, "text": "/start"}}'; echo""",
        "# Ask for an approval (ID keeps its id):",
        f"ID=$(curl -s -XPOST {http}/api/v1/approvals {auth} {js} "
        """-d '{"action": "restart", "target": "deploy/api", "risk_level": "low", """
        """"requested_by": "ci"}' """
        f'| {_json_field("id")}); echo "request $ID"',
        "# Tap Approve on its card as alice (the newest card showing that id):",
        f"curl -s -XPOST {emu}/tap {js} "
        """-d '{"from_id": 1001, "button_text": "✅ Approve", "text_contains": "'"$ID"'", """
        """"wait": 10}'; echo""",
        "# Read the chat: the answer to /start and the card (edited once the vote is in):",
        f"curl -s {emu}/messages; echo",
        "# Fetch the approval token (TOKEN keeps it):",
        f"TOKEN=$(curl -s {http}/api/v1/approvals/$ID {auth} | {_json_field('approval_token')})"
        '; echo "token of ${#TOKEN} characters"',
        "# Redeem it as the executor would, then once more (409 token_replayed):",
        redeem,
        redeem,
    ]


def _banner(http: str, emu_url: str, api_key: str) -> str:
    """Where everything is, and the commands to act as the demo users."""
    commands = "\n".join(f"  {line}" for line in banner_commands(http, emu_url, api_key))
    return f"""
Quorum sandbox is up.
  Bot HTTP API:      {http}   (health: {http}/readyz)
  Telegram emulator: {emu_url}   (control API under /_emulator/)
  Team chat:         platform-oncall ({SANDBOX_CHAT})
  Users:             alice (1001, approver), bob (1002, approver), carol (1003, not an approver)
  Sandbox API key:   {api_key}

{COMMANDS_START}
{commands}
{COMMANDS_END}
"""
