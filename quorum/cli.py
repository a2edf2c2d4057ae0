"""The `quorum` command: run, migrate, sandbox, check-config, new-api-key, audit."""

from __future__ import annotations

import argparse
import logging
import sys
import traceback
from importlib import metadata

from bot.configcheck import (
    ERROR,
    Problem,
    check,
    combined,
    has_errors,
    load_settings_reporting,
)
from bot.policy import SCOPES, Policy, new_api_key, parse_policy, parse_scopes, read_policy_data
from bot.rendering import plural
from bot.settings import ConfigError, Settings, load_settings
from quorum.audit import add_commands as add_audit_commands
from quorum.embedded import stop_embedded_postgres
from quorum.logs import configure
from quorum.online import DATABASE, Unreachable, cause, check_online, culprit, preflight

log = logging.getLogger("quorum")


def _configure_logging(settings: Settings) -> None:
    """Logs as QUORUM_LOG_FORMAT says; with the embedded PostgreSQL, its start-up chatter and
    alembic's go to a file under the data directory."""
    embedded = not settings.database_url
    configure(settings.log_level, settings.log_format, settings.data_dir if embedded else None)
    # Alembic announces each of its plugins at INFO: noise before every migration.
    logging.getLogger("alembic.runtime.plugins").setLevel(logging.WARNING)


def _stop_embedded(settings: Settings) -> None:
    """The embedded PostgreSQL this command started ends with it (no orphan under pid 1)."""
    if not settings.database_url:
        stop_embedded_postgres(settings.data_dir)


def checked_configuration() -> tuple[Settings, Policy] | None:
    """Settings and policy with every problem printed to stderr, one line each; None if any
    is an error (warnings alone pass)."""
    settings, problems = load_settings_reporting()
    data = None
    try:
        data = read_policy_data(settings.policy_file)
    except ConfigError as exc:
        where, _, message = str(exc).partition(": ")
        problems.append(Problem(ERROR, where, message))
    problems = combined(problems, check(settings, data))
    for problem in problems:
        print(problem.line, file=sys.stderr)
    if has_errors(problems) or data is None:
        return None
    return settings, parse_policy(data, str(settings.policy_file))


def cmd_run(_: argparse.Namespace) -> int:
    loaded = checked_configuration()
    if loaded is None:
        return 2
    settings, policy = loaded
    _configure_logging(settings)
    from quorum.app import PollingTaken, run_loop, serve

    async def start() -> None:
        await preflight(settings)
        await serve(settings, policy)

    owner = True
    try:
        run_loop(start())
    except PollingTaken as exc:
        owner = False  # the embedded PostgreSQL, if any, is the other process's
        print(f"quorum: {exc}", file=sys.stderr)
        return 2
    except Unreachable:
        raise
    except Exception as exc:
        variable = culprit(exc)
        if variable is None:
            raise
        url = settings.database_url if variable == DATABASE else settings.redis_url
        raise Unreachable(variable, cause(exc, url, variable)) from exc
    finally:
        if owner:
            _stop_embedded(settings)
    return 0


def cmd_migrate(_: argparse.Namespace) -> int:
    from quorum.app import run_migrations
    from quorum.embedded import start_embedded_postgres

    settings = load_settings()
    _configure_logging(settings)
    url = settings.database_url or start_embedded_postgres(settings.data_dir)
    try:
        run_migrations(url)
    except Exception as exc:
        raise Unreachable(DATABASE, cause(exc, url, DATABASE)) from exc
    finally:
        _stop_embedded(settings)
    print("database is at the newest schema")
    return 0


def cmd_check_config(args: argparse.Namespace) -> int:
    loaded = checked_configuration()
    if loaded is None:
        return 2
    settings, policy = loaded
    teams = ", ".join(
        f"{t.name} ({plural(len(t.approvers), 'approver')}, {plural(len(t.chat_ids), 'chat')})"
        for t in policy.teams.values()
    )
    print(f"configuration is valid: mode {settings.telegram_mode}; teams: {teams}")
    if not args.online:
        return 0
    from quorum.app import run_loop, schema_head

    failures, passed = run_loop(check_online(settings, schema_head()))
    for line in failures:
        print(f"quorum: {line}", file=sys.stderr)
    for line in passed:
        print(f"online: {line}")
    return 2 if failures else 0


def cmd_new_api_key(args: argparse.Namespace) -> int:
    key, line = new_api_key(args.name, args.scopes)
    print(f"API key (give it to the service; it is not stored anywhere): {key}")
    print(f"Paste into the team's api_keys in the policy file:\n  {line}")
    return 0


def cmd_sandbox(args: argparse.Namespace) -> int:
    settings = load_settings()
    _configure_logging(settings)
    from quorum.app import PollingTaken, run_loop
    from sandbox.world import run_sandbox  # the one import of the sandbox from product code

    try:
        run_loop(run_sandbox(args.port, args.emulator_port))
    except PollingTaken as exc:  # another sandbox on this data: its PostgreSQL stays up
        print(f"quorum: {exc}", file=sys.stderr)
        return 2
    except BaseException:
        _stop_embedded(settings)
        raise
    _stop_embedded(settings)
    return 0


def cmd_stop_embedded(_: argparse.Namespace) -> int:
    """For `make clean`: stop the embedded PostgreSQL before its data goes."""
    settings = load_settings()
    if stop_embedded_postgres(settings.data_dir):
        print(f"stopped the embedded PostgreSQL under {settings.data_dir}")
    return 0


def _scopes(text: str) -> tuple[str, ...]:
    try:
        return parse_scopes(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _version() -> str:
    try:
        return metadata.version("quorum")
    except metadata.PackageNotFoundError:  # run from a source tree that is not installed
        return "unknown"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="quorum", description=__doc__)
    parser.add_argument(
        "--version", action="version", version=f"quorum {_version()}", help="print the version"
    )
    parser.add_argument(
        "--debug", action="store_true", help="show the traceback behind a one-line failure"
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    sub.add_parser("run", help="serve the HTTP API and Telegram (webhook or polling)").set_defaults(
        func=cmd_run
    )
    sub.add_parser("migrate", help="upgrade the database to the newest schema").set_defaults(
        func=cmd_migrate
    )
    sb = sub.add_parser("sandbox", help="everything on this machine, with a Telegram emulator")
    sb.add_argument("--port", type=int, default=8080, help="Quorum's HTTP port (default 8080)")
    sb.add_argument(
        "--emulator-port", type=int, default=8081, help="the emulator's port (default 8081)"
    )
    sb.set_defaults(func=cmd_sandbox)
    # Internal (make clean), so not listed: a `help=` would show it in `quorum --help`.
    sub.add_parser("stop-embedded").set_defaults(func=cmd_stop_embedded)
    check_cmd = sub.add_parser(
        "check-config", help="validate settings and the policy file, reporting every problem"
    )
    check_cmd.add_argument(
        "--online",
        action="store_true",
        help="also reach PostgreSQL (migrated?), Redis (PING, EVAL) and Telegram (getMe)",
    )
    check_cmd.set_defaults(func=cmd_check_config)
    key = sub.add_parser("new-api-key", help="print a fresh API key and its policy line")
    key.add_argument("name", help="a name for the key, shown in the policy file and audit log")
    key.add_argument(
        "--scopes",
        type=_scopes,
        metavar="SCOPE,...",
        help=f"what the key may do, of: {', '.join(SCOPES)} (default: all but audit:read)",
    )
    key.set_defaults(func=cmd_new_api_key)
    add_audit_commands(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return int(args.func(args))
    except ConfigError as exc:
        if args.debug:
            traceback.print_exc()
        print(f"quorum: configuration error: {exc}", file=sys.stderr)
        return 2
    except Unreachable as exc:
        if args.debug:
            traceback.print_exc()
        print(f"quorum: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
