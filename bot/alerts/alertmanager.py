"""Quorum's silences mirrored in each team's Alertmanager, outside any transaction."""

from __future__ import annotations

from datetime import UTC

import aiohttp

from bot.errors import QuorumError
from bot.policy import Team
from bot.rendering import fit
from bot.runtime import Runtime
from storage import alerts as store
from storage import audit
from storage.alerts import SilenceRecord
from storage.db import transaction
from storage.outbox import enqueue_text
from storage.teams import active_chats

ALERTMANAGER_TIMEOUT = aiohttp.ClientTimeout(total=5)
JOB_BATCH = 10
# (what the job did, whether it failed) -> its audit event
AUDIT_EVENT = {
    ("create", False): "alertmanager_silence_created",
    ("create", True): "alertmanager_silence_failed",
    ("expire", False): "alertmanager_silence_expired",
    ("expire", True): "alertmanager_unsilence_failed",
}


class AlertmanagerFailed(QuorumError):
    """Alertmanager answered a silence call with an error status."""

    code = "alertmanager_failed"


async def sync_alertmanager(rt: Runtime, http: aiohttp.ClientSession) -> int:
    """Create or expire silences in Alertmanager, outside any transaction, with a timeout."""
    async with transaction(rt.sessions) as session:
        jobs = await store.claim_alertmanager_jobs(session, JOB_BATCH)
    for job in jobs:
        error, silence_ref = await _carry_out(rt, http, job)
        await _finish(rt, job, error, silence_ref)
    return len(jobs)


async def _carry_out(
    rt: Runtime, http: aiohttp.ClientSession, job: SilenceRecord
) -> tuple[str | None, str | None]:
    """(error, Alertmanager's silence id): exactly one of them is set."""
    team = rt.team(job.team_id)
    if team is None or not team.alertmanager_url:
        return "the team has no alertmanager_url any more", None
    try:
        if job.am_status == "create":
            return None, await _create(http, team, job)
        return None, await _expire(http, team, job)
    except (aiohttp.ClientError, TimeoutError, AlertmanagerFailed, ValueError) as exc:
        return str(exc) or type(exc).__name__, None


def _base(team: Team) -> str:
    return (team.alertmanager_url or "").rstrip("/")


async def _create(http: aiohttp.ClientSession, team: Team, silence: SilenceRecord) -> str:
    body = {
        "matchers": silence.matchers.get("matchers", []),
        "startsAt": silence.starts_at.astimezone(UTC).isoformat(),
        "endsAt": silence.ends_at.astimezone(UTC).isoformat(),
        "createdBy": f"{silence.created_by_name} via Quorum",
        "comment": silence.matchers.get("comment")
        or f"Silenced from Telegram by {silence.created_by_name} (Quorum)",
    }
    async with http.post(f"{_base(team)}/api/v2/silences", json=body) as resp:
        data = await resp.json(content_type=None) if resp.status < 300 else None
        if resp.status >= 300 or not isinstance(data, dict) or "silenceID" not in data:
            text = (await resp.text())[:200]
            raise AlertmanagerFailed(f"HTTP {resp.status}: {text}")
        return str(data["silenceID"])


async def _expire(http: aiohttp.ClientSession, team: Team, silence: SilenceRecord) -> str:
    assert silence.alertmanager_silence_id is not None
    url = f"{_base(team)}/api/v2/silence/{silence.alertmanager_silence_id}"
    async with http.delete(url) as resp:
        # 404: already gone, which is what we wanted.
        if resp.status >= 300 and resp.status != 404:
            text = (await resp.text())[:200]
            raise AlertmanagerFailed(f"HTTP {resp.status}: {text}")
    return silence.alertmanager_silence_id


async def _finish(
    rt: Runtime, job: SilenceRecord, error: str | None, silence_ref: str | None
) -> None:
    """Record the outcome; a failure is told to the team's chats, a creation refreshes cards."""
    expected = job.am_status or ""
    creating = expected == "create"
    async with transaction(rt.sessions) as session:
        outcome = "failed" if error else ("created" if creating else "expired")
        stored = await store.finish_alertmanager_job(
            session,
            job.id,
            expected=expected,
            status=outcome,
            silence_ref=silence_ref if creating and not error else None,
            error=error[:500] if error else None,
        )
        await audit.record(
            session,
            AUDIT_EVENT[(expected, error is not None)],
            actor="quorum",
            team_id=job.team_id,
            silence_id=job.id,
            fingerprint=job.fingerprint,
            alertmanager_silence_id=silence_ref or job.alertmanager_silence_id,
            error=error,
        )
        if error:
            what = "create" if creating else "expire"
            msg = (
                f"⚠️ Could not {what} the Alertmanager silence for silence {job.id} "
                f"(<code>{fit(job.fingerprint, 64)}</code>): {fit(error, 300)}. "
                "The silence still applies in Quorum."
            )
            for chat_id in await active_chats(session, job.team_id):
                await enqueue_text(session, chat_id, msg)
        elif stored is not None and creating:
            firing = await store.find_linked_alerts(session, job.team_id, job.fingerprint, None)
            await store.schedule_refresh(session, [a.id for a in firing])
