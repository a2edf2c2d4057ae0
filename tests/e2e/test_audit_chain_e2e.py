"""The audit chain in a running Quorum (sealer worker, checkpoints posted to the audit chat)
and the `quorum audit` commands as an operator runs them."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import os
import subprocess
import sys
from asyncio.subprocess import PIPE
from pathlib import Path
from typing import Any

import asyncpg

from bot.audit import chain
from storage.db import to_sync_dsn
from tests.e2e.flows import approved, sql
from tests.support import ALICE, BOT_ID, ROOT, Harness, QuorumFactory

AUDIT_CHAT = -1001000000900
SIGNING_KEY = chain.new_private_key()
PUBLIC_KEY = chain.b64(chain.public_bytes(chain.load_private_key(SIGNING_KEY).public_key()))


async def audit_cli(
    cwd: Path, db_url: str, *args: str, key: str = SIGNING_KEY
) -> subprocess.CompletedProcess[str]:
    """`quorum audit …` in a directory of its own (no .env), this checkout's code. Awaited,
    not run blocking: the Quorum under test shares this event loop, and its sealer must be
    able to commit (and release its lock) while the command waits for that lock."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("QUORUM_")}
    env.update(PYTHONPATH=str(ROOT), QUORUM_DATABASE_URL=db_url, QUORUM_AUDIT_SIGNING_KEY=key)
    argv = [sys.executable, "-m", "quorum.cli", "audit", *args]
    process = await asyncio.create_subprocess_exec(
        *argv, cwd=cwd, env=env, stdout=PIPE, stderr=PIPE
    )
    async with asyncio.timeout(60):
        out, err = await process.communicate()
    code = process.returncode
    assert code is not None
    return subprocess.CompletedProcess(argv, code, out.decode(), err.decode())


async def sealed_quorum(make_quorum: QuorumFactory) -> Harness:
    h = await make_quorum(
        audit_signing_key=SIGNING_KEY,
        audit_chat_id=AUDIT_CHAT,
        audit_checkpoint_seconds=1,
        audit_seal_interval_seconds=0.05,
    )
    await h.emu.add_chat(AUDIT_CHAT, "supergroup", title="audit", members=[ALICE])
    return h


async def everything_sealed(h: Harness) -> bool:
    rows = await sql(
        h, "SELECT count(*) FILTER (WHERE seq IS NULL) AS open, count(*) AS n FROM audit_log"
    )
    return bool(rows[0]["n"] > 0 and rows[0]["open"] == 0)


async def test_running_quorum_seals_votes_and_posts_signed_checkpoints(
    make_quorum: QuorumFactory, tmp_path: Path
) -> None:
    h = await sealed_quorum(make_quorum)
    request_id, _ = await approved(h)
    await h.wait_for(lambda: everything_sealed(h))
    events = await sql(
        h, "SELECT event FROM audit_log WHERE approval_id = $1::uuid ORDER BY seq", request_id
    )
    assert [r["event"] for r in events][:1] == ["approval.created"]

    async def posted_checkpoint() -> dict[str, Any] | None:
        for m in await h.emu.messages(AUDIT_CHAT):
            if m["from_id"] == BOT_ID and "Audit checkpoint" in str(m["text"]):
                return m
        return None

    message = await h.wait_for(posted_checkpoint, timeout=20)
    document = str(message["text"]).split("\n", 1)[1]
    posted = chain.Checkpoint.from_json(json.loads(document))
    assert chain.signature_valid(chain.load_public_key(PUBLIC_KEY), posted)
    (tmp_path / "checkpoint.json").write_text(document)
    db_url = h.settings.database_url
    unchecked = await audit_cli(
        tmp_path, db_url, "verify", "--checkpoint", "checkpoint.json", key=""
    )
    assert unchecked.returncode == 0, unchecked.stderr
    assert "signatures are not checked" in unchecked.stderr
    done = await audit_cli(
        tmp_path,
        db_url,
        "verify",
        "--checkpoint",
        "checkpoint.json",
        "--public-key",
        PUBLIC_KEY,
        key="",
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("verified ")
    assert " head seq " in done.stdout


async def test_cli_verify_export_and_keys(make_quorum: QuorumFactory, tmp_path: Path) -> None:
    h = await sealed_quorum(make_quorum)
    request_id, _ = await approved(h)
    await h.wait_for(lambda: everything_sealed(h))
    db_url = h.settings.database_url

    signed = await audit_cli(tmp_path, db_url, "checkpoint")
    assert signed.returncode == 0, signed.stderr
    head = json.loads(signed.stdout)
    ok = await audit_cli(tmp_path, db_url, "verify")
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.startswith(
        f"verified {head['seq']} rows, head seq {head['seq']} {head['hash']}"
    )

    public = await audit_cli(tmp_path, db_url, "public-key")
    assert public.stdout.strip() == PUBLIC_KEY
    fresh = await audit_cli(tmp_path, db_url, "new-key")
    name, _, value = fresh.stdout.strip().partition("=")
    assert name == "QUORUM_AUDIT_SIGNING_KEY"
    made = chain.b64(chain.public_bytes(chain.load_private_key(value).public_key()))
    assert made in fresh.stderr and made != PUBLIC_KEY

    lines = (await audit_cli(tmp_path, db_url, "export", "--team", "platform")).stdout.splitlines()
    exported = [json.loads(line) for line in lines]
    assert exported and all(r["team_id"] is not None for r in exported)
    assert [r["seq"] for r in exported] == sorted(r["seq"] for r in exported)
    assert any(r["approval_id"] == request_id and len(r["hash"]) == 64 for r in exported)
    as_csv = await audit_cli(tmp_path, db_url, "export", "--format", "csv")
    table = list(csv.DictReader(io.StringIO(as_csv.stdout)))
    assert len(table) == head["seq"]
    assert json.loads(table[0]["detail"]) is not None
    nothing = await audit_cli(tmp_path, db_url, "export", "--since", "2999-01-01T00:00:00Z")
    assert (nothing.returncode, nothing.stdout) == (0, "")

    # A superuser edits one row with the triggers off: verify exits 1 naming its seq.
    conn = await asyncpg.connect(to_sync_dsn(db_url))
    try:
        await conn.execute("SET session_replication_role = replica")
        await conn.execute("UPDATE audit_log SET actor = 'mallory' WHERE seq = 2")
    finally:
        await conn.close()
    bad = await audit_cli(tmp_path, db_url, "verify")
    assert bad.returncode == 1
    assert bad.stderr.startswith("seq 2: hash does not match")
    later = await audit_cli(tmp_path, db_url, "verify", "--from-seq", "3")
    assert later.returncode == 0, later.stderr
