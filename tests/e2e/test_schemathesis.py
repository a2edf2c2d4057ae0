"""Schemathesis against the served OpenAPI document: no 5xx, every answer as documented."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import pytest

from tests.support import API_KEY, Harness

SEED = 20240611
RUN_SECONDS = 180  # a safety net: the bounded run takes about a minute


@pytest.mark.timeout(RUN_SECONDS + 60)
async def test_schemathesis_finds_no_server_error_nor_schema_violation(
    quorum: Harness, tmp_path: Path
) -> None:
    # Its CLI in a subprocess: its pytest plugin runs synchronous tests, and this Quorum
    # serves on the test's event loop, which must keep running while it is exercised.
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "schemathesis.cli",
        "run",
        f"{quorum.url}/api/v1/openapi.json",
        "--checks",
        "not_a_server_error,response_schema_conformance",
        "--phases",
        "examples,coverage,fuzzing,stateful",
        "--mode",
        "all",
        "--seed",
        str(SEED),
        "--max-examples",
        "25",
        "--workers",
        "1",
        "--request-timeout",
        "20",
        "--no-color",
        "--generation-database",
        "none",
        "--header",
        f"Authorization: Bearer {API_KEY}",
        cwd=tmp_path,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        async with asyncio.timeout(RUN_SECONDS):
            out, _ = await proc.communicate()
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    report = out.decode(errors="replace")
    assert proc.returncode == 0, report[-20_000:]
