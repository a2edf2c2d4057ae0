"""The `quorum` command: run, migrate, sandbox, check-config, new-api-key."""

from __future__ import annotations

import argparse
import logging
import sys

from bot.policy import Policy, load_policy, new_api_key
from bot.rendering import plural
from bot.settings import ConfigError, Settings, load_settings

log = logging.getLogger("quorum")


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


def cmd_run(_: argparse.Namespace) -> int:
    settings, policy = load_all()
    _configure_logging(settings.log_level)
    from quorum.app import run_loop, serve

    run_loop(serve(settings, policy))
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
        f"{t.name} ({plural(len(t.approvers), 'approver')}, {plural(len(t.chat_ids), 'chat')})"
        for t in policy.teams.values()
    )
    print(f"configuration is valid: mode {settings.telegram_mode}; teams: {teams}")
    return 0


def cmd_new_api_key(args: argparse.Namespace) -> int:
    key, line = new_api_key(args.name)
    print(f"API key (give it to the service; it is not stored anywhere): {key}")
    print(f"Paste into the team's api_keys in the policy file:\n  {line}")
    return 0


def cmd_sandbox(args: argparse.Namespace) -> int:
    _configure_logging(load_settings().log_level)
    from quorum.app import run_loop
    from sandbox.world import run_sandbox  # the one import of the sandbox from product code

    run_loop(run_sandbox(args.port, args.emulator_port))
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
