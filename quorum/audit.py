"""`quorum audit`: verify the chain, export it, sign a checkpoint, print or make the key."""

from __future__ import annotations

import argparse
import json
import sys
from datetime import datetime
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from bot.audit import chain
from bot.audit.sealer import make_checkpoint, seal_all
from bot.audit.verify import export, verify
from bot.settings import ConfigError, Settings, load_settings
from storage.db import make_engine, make_sessionmaker, transaction
from storage.teams import team_id_named


def _database(settings: Settings) -> str:
    if not settings.database_url:
        raise ConfigError("QUORUM_DATABASE_URL: required by quorum audit")
    return settings.database_url


def _signing_key(settings: Settings) -> str:
    secret = settings.audit_signing_key.get_secret_value()
    if not secret:
        raise ConfigError("QUORUM_AUDIT_SIGNING_KEY: not set (make one with quorum audit new-key)")
    return secret


def cmd_new_key(_: argparse.Namespace) -> int:
    key = chain.new_private_key()
    public = chain.load_private_key(key).public_key()
    print(f"QUORUM_AUDIT_SIGNING_KEY={key}")
    print(
        f"public key (give it to auditors): {chain.b64(chain.public_bytes(public))}",
        file=sys.stderr,
    )
    return 0


def cmd_public_key(_: argparse.Namespace) -> int:
    public = chain.load_private_key(_signing_key(load_settings())).public_key()
    print(chain.b64(chain.public_bytes(public)))
    print(f"key id {chain.key_id(public)}", file=sys.stderr)
    return 0


def _public_key(settings: Settings, given: str | None) -> Ed25519PublicKey | None:
    if given:
        try:
            return chain.load_public_key(given)
        except ValueError as exc:
            raise ConfigError(f"--public-key: {exc}") from None
    secret = settings.audit_signing_key.get_secret_value()
    return chain.load_private_key(secret).public_key() if secret else None


def _read_checkpoint(path: Path) -> chain.Checkpoint:
    try:
        return chain.Checkpoint.from_json(json.loads(path.read_text()))
    except (OSError, ValueError) as exc:
        raise ConfigError(f"--checkpoint {path}: {exc}") from None


def cmd_verify(args: argparse.Namespace) -> int:
    from quorum.app import run_loop

    settings = load_settings()
    public = _public_key(settings, args.public_key)
    extra = _read_checkpoint(args.checkpoint) if args.checkpoint else None
    if public is None:
        print("quorum: no key: checkpoint signatures are not checked", file=sys.stderr)

    async def run() -> int:
        engine = make_engine(_database(settings), pool_size=2)
        try:
            verdict = await verify(
                make_sessionmaker(engine), public, from_seq=args.from_seq, extra=extra
            )
        finally:
            await engine.dispose()
        print(verdict.line, file=sys.stdout if verdict.bad_seq is None else sys.stderr)
        return 0 if verdict.bad_seq is None else 1

    return run_loop(run())


def _when(text: str) -> datetime:
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an ISO 8601 time: {text!r}") from None
    if when.tzinfo is None:
        raise argparse.ArgumentTypeError(f"give a time zone (…Z or …+00:00): {text!r}")
    return when


def cmd_export(args: argparse.Namespace) -> int:
    from quorum.app import run_loop

    settings = load_settings()

    async def run() -> int:
        engine = make_engine(_database(settings), pool_size=2, statement_timeout_ms=0)
        sessions = make_sessionmaker(engine)
        try:
            team_id = None
            if args.team is not None:
                async with transaction(sessions) as session:
                    team_id = await team_id_named(session, args.team)
                if team_id is None:
                    raise ConfigError(f"--team: no team named {args.team!r}")
            out = sys.stdout
            async for line in export(
                sessions, args.format, since=args.since, until=args.until, team_id=team_id
            ):
                out.write(line)
            out.flush()
        finally:
            await engine.dispose()
        return 0

    return run_loop(run())


def cmd_checkpoint(_: argparse.Namespace) -> int:
    """Seal what is ready and sign the head now (the on-demand checkpoint)."""
    from quorum.app import run_loop

    settings = load_settings()
    _signing_key(settings)

    async def run() -> int:
        engine = make_engine(_database(settings), pool_size=2)
        sessions = make_sessionmaker(engine)
        try:
            await seal_all(sessions)
            signed = await make_checkpoint(sessions, settings, force=True)
        finally:
            await engine.dispose()
        if signed is None:
            print("quorum: nothing sealed yet", file=sys.stderr)
            return 1
        print(json.dumps(signed.to_json()))
        return 0

    return run_loop(run())


def add_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """`quorum audit …` under the main parser's subcommands."""
    audit = sub.add_parser("audit", help="the hash-chained audit log: verify, export, checkpoints")
    cmds = audit.add_subparsers(dest="audit_command", required=True, metavar="COMMAND")
    check = cmds.add_parser("verify", help="recompute the chain and check every checkpoint")
    start = check.add_mutually_exclusive_group()
    start.add_argument("--checkpoint", type=Path, metavar="FILE", help="also check this checkpoint")
    start.add_argument(
        "--from-seq", type=int, default=1, metavar="N", help="start at seq N (trusting its link)"
    )
    check.add_argument(
        "--public-key", metavar="BASE64", help="check signatures with this key (default: ours)"
    )
    check.set_defaults(func=cmd_verify)
    out = cmds.add_parser("export", help="stream sealed rows with their hashes")
    out.add_argument("--since", type=_when, help="rows at or after this time (ISO 8601)")
    out.add_argument("--until", type=_when, help="rows before this time (ISO 8601)")
    out.add_argument("--team", help="one team's rows")
    out.add_argument("--format", choices=("jsonl", "csv"), default="jsonl")
    out.set_defaults(func=cmd_export)
    cmds.add_parser("checkpoint", help="seal and sign the chain head now").set_defaults(
        func=cmd_checkpoint
    )
    cmds.add_parser("public-key", help="print the checkpoint signing public key").set_defaults(
        func=cmd_public_key
    )
    cmds.add_parser("new-key", help="print a fresh checkpoint signing key").set_defaults(
        func=cmd_new_key
    )
