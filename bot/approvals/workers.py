"""Background work on approvals: expiry, escalation reminders, signed callback deliveries and
the card worker."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import math
from collections.abc import Sequence
from datetime import UTC, datetime

import aiohttp
from sqlalchemy.ext.asyncio import AsyncSession

from bot import private
from bot.approvals.card import mention
from bot.approvals.decision import after_decision
from bot.approvals.outcome import outcome_of
from bot.approvals.publish import refresh_cards
from bot.policy import Approver, RiskLevel, Rule, Team
from bot.rendering import clip, esc, fmt_duration, fmt_time
from bot.runtime import Runtime
from bot.votes import requesters
from bot.wakeups import FALLBACK_SECONDS, sleep_for
from storage import approvals as repo
from storage import audit, wakeups
from storage import tokens as tokens_repo
from storage import votes as vote_repo
from storage.db import transaction
from storage.outbox import Priority, enqueue_text
from storage.teams import active_chats

log = logging.getLogger(__name__)

CALLBACK_MAX_ATTEMPTS = 8
CALLBACK_LEASE_SECONDS = 30
CALLBACK_TIMEOUT_SECONDS = 5.0
CALLBACK_SIGNATURE_HEADER = "X-Quorum-Signature"
MAX_MENTIONS = 30


# ---------------------------------------------------------------- expiry


async def expire_due(rt: Runtime, limit: int = 50) -> int:
    """Pending requests past expires_at become expired; safe with several processes."""
    async with transaction(rt.sessions) as session:
        due = await repo.claim_expired(session, limit)
        for req in due:
            expired = await repo.transition(session, req.id, "expired", require_live=False)
            if expired is None:
                continue
            votes = (await vote_repo.votes_for(session, [req.id]))[req.id]
            await after_decision(rt, session, expired, votes, expired.updated_at, None)
        return len(due)


# ---------------------------------------------------------------- escalation


async def escalate_due(rt: Runtime) -> int:
    """One reminder per request after escalate_after_seconds, naming who has not voted. Only
    the team levels with a reminder due are visited (one grouped query finds them)."""
    async with transaction(rt.sessions) as session:
        ages = await wakeups.escalation_ages(session)
    sent = 0
    for age in ages:
        team, rule = rt.team(age.team_id), _rule_of(rt, age.team_id, age.risk_level)
        after = None if rule is None else rule.escalate_after_seconds
        if team is not None and after is not None and age.oldest_seconds >= after:
            sent += await _escalate_level(rt, team, age.team_id, age.risk_level, after)
    return sent


async def _escalate_level(rt: Runtime, team: Team, team_id: int, level: str, after: int) -> int:
    """Remind the team's chats of its requests at this risk level that waited `after` s."""
    async with transaction(rt.sessions) as session:
        due = await repo.claim_escalations(session, team_id, level, after)
        if not due:
            return 0
        votes = await vote_repo.votes_for(session, [r.id for r in due])
        links = await repo.card_links(session, [r.id for r in due])
        for req in due:
            waiting = _waiting(team, req, votes[req.id])
            body = _reminder(rt, req, votes[req.id], waiting, after)
            await _post_reminder(session, team_id, req, body, dict(links[req.id]))
            await _to_targets(session, team.rule(RiskLevel(req.risk_level)).escalate_to, body)
            await repo.mark_escalated(session, req.id)
            await audit.record(
                session,
                "approval.escalated",
                team_id=team_id,
                approval_id=req.id,
                waiting=[a.telegram_id for a in waiting],
            )
        return len(due)


async def warn_due(rt: Runtime) -> int:
    """Once per request, as it nears expiry: the card says "⏳ expires in N min" and one reply
    mentions the eligible approvers who have not voted (also sent to `escalate_to`).

    Only the team levels with a warning due are visited (one grouped query finds them):
    a transaction per level of every team, every pass, was most of an idle process's CPU
    with 100 teams (bench.votes: 2-5 % of a core)."""
    async with transaction(rt.sessions) as session:
        times = await wakeups.warning_times(session)
    warned = 0
    for w in times:
        team, rule = rt.team(w.team_id), _rule_of(rt, w.team_id, w.risk_level)
        due_in = None if rule is None else _warning_in(rule, w)
        if team is not None and due_in is not None and due_in <= 0:
            warned += await _warn_level(rt, team, w.team_id, w.risk_level)
    return warned


async def _warn_level(rt: Runtime, team: Team, team_id: int, level: str) -> int:
    rule = team.rule(RiskLevel(level))
    async with transaction(rt.sessions) as session:
        due = await repo.claim_warnings(session, team_id, level, rule.warn_before_seconds)
        if not due:
            return 0
        votes = await vote_repo.votes_for(session, [r.id for r in due])
        links = await repo.card_links(session, [r.id for r in due])
        for req in due:
            assert req.warned_at is not None
            waiting = _waiting(team, req, votes[req.id])
            left = max(1, math.ceil((req.expires_at - req.warned_at).total_seconds() / 60))
            body = _warning(rt, req, votes[req.id], waiting, left)
            await _post_reminder(session, team_id, req, body, dict(links[req.id]))
            await _to_targets(session, rule.escalate_to, body)
            await refresh_cards(rt, session, req, votes[req.id], req.warned_at)
            await audit.record(
                session,
                "approval.warned",
                team_id=team_id,
                approval_id=req.id,
                minutes_left=left,
                waiting=[a.telegram_id for a in waiting],
                targets=list(rule.escalate_to),
            )
        return len(due)


def _waiting(
    team: Team, req: repo.RequestRecord, votes: Sequence[vote_repo.VoteRecord]
) -> list[Approver]:
    """The team's approvers who may vote on `req` and have not."""
    skip = {v.voter_telegram_id for v in votes} | requesters(req, team.approvers)
    return [a for a in team.approvers.values() if a.telegram_id not in skip]


def _standing(
    rt: Runtime,
    req: repo.RequestRecord,
    votes: Sequence[vote_repo.VoteRecord],
    waiting: Sequence[Approver],
) -> tuple[str, str]:
    """What a warning or a reminder says of a request: its action and tally, and the people
    still to vote (mentioned, so Telegram notifies them)."""
    outcome = outcome_of(rt, req, votes, datetime.now(UTC))
    mentions = ", ".join(mention(a.telegram_id, a.name) for a in waiting[:MAX_MENTIONS])
    tally = (
        f"<code>{clip(req.action, 200)}</code> on <code>{clip(req.target, 200)}</code> has "
        f"{len(outcome.approvals)}/{outcome.required} approvals"
    )
    return tally, mentions or "Nobody left to ask."


def _warning(
    rt: Runtime,
    req: repo.RequestRecord,
    votes: Sequence[vote_repo.VoteRecord],
    waiting: Sequence[Approver],
    minutes: int,
) -> str:
    tally, who = _standing(rt, req, votes, waiting)
    return f"⏳ <b>Expires in {minutes} min</b>: {tally}.\n{who}"


async def _to_targets(session: AsyncSession, targets: Sequence[int], body: str) -> None:
    """`escalate_to`: a person gets a private message, a chat a post."""
    for target in targets:
        if target > 0:
            await private.send(session, target, body)
        else:
            await enqueue_text(session, target, body, priority=Priority.REPLY, kind="escalation")


def _reminder(
    rt: Runtime,
    req: repo.RequestRecord,
    votes: Sequence[vote_repo.VoteRecord],
    waiting: Sequence[Approver],
    after: int,
) -> str:
    tally, who = _standing(rt, req, votes, waiting)
    expires = esc(fmt_time(req.expires_at, rt.zone))
    return f"⏰ <b>Still waiting</b> ({fmt_duration(after)}): {tally}, expires {expires}.\n{who}"


async def _post_reminder(
    session: AsyncSession,
    team_id: int,
    req: repo.RequestRecord,
    body: str,
    cards: dict[int, int],
) -> None:
    """The reminder as a reply to each card (so in its forum topic), else to the team's chats."""
    # Group cards only: a card in someone's private chat (/pending there) gets no reminder.
    for chat_id in [c for c in cards if c < 0] or await active_chats(session, team_id):
        await enqueue_text(
            session,
            chat_id,
            body,
            priority=Priority.REPLY,
            kind="escalation",
            reply_to=cards.get(chat_id),
        )


# ---------------------------------------------------------------- callbacks


def callback_key(secret: str) -> bytes:
    """The HMAC key for callback signatures: derived, so it can sign nothing else."""
    return hmac.new(secret.encode(), b"quorum-callbacks-v1", hashlib.sha256).digest()


def sign_callback(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(callback_key(secret), body, hashlib.sha256).hexdigest()


def _backoff(attempts: int) -> float:
    return float(min(300, 2 ** max(0, attempts - 1)))


async def deliver_callbacks(rt: Runtime, http: aiohttp.ClientSession, limit: int = 10) -> int:
    """POST decisions to callback URLs, signed; retried with backoff, then given up."""
    async with transaction(rt.sessions) as session:
        due = await tokens_repo.claim_callbacks(session, limit, CALLBACK_LEASE_SECONDS)
    secret = rt.settings.token_secret.get_secret_value()
    for item in due:
        error, final = await _post_callback(http, item, secret)
        await _finish_callback(rt, item, error, final=final)
    return len(due)


async def _post_callback(
    http: aiohttp.ClientSession, item: tokens_repo.CallbackRecord, secret: str
) -> tuple[str | None, bool]:
    """One delivery attempt: (the error or None, whether retrying is pointless)."""
    body = json.dumps(item.body, separators=(",", ":"), sort_keys=True).encode()
    headers = {
        "Content-Type": "application/json",
        CALLBACK_SIGNATURE_HEADER: sign_callback(secret, body),
        "X-Quorum-Delivery": str(item.id),
    }
    try:
        # Never followed: a redirect would carry the signed body and its approval token to a
        # URL the team's callback_url_prefixes never allowed.
        async with http.post(item.url, data=body, headers=headers, allow_redirects=False) as resp:
            if 300 <= resp.status < 400:
                return f"HTTP {resp.status} redirect, not followed", True
            if not 200 <= resp.status < 300:
                return f"HTTP {resp.status}", False
    except (aiohttp.ClientError, TimeoutError, OSError) as exc:
        return type(exc).__name__, False
    return None, False


async def _finish_callback(
    rt: Runtime, item: tokens_repo.CallbackRecord, error: str | None, *, final: bool = False
) -> None:
    give_up = error is not None and (final or item.attempts >= CALLBACK_MAX_ATTEMPTS)
    async with transaction(rt.sessions) as session:
        await tokens_repo.finish_callback(
            session,
            item.id,
            delivered=error is None,
            error=error,
            retry_in_seconds=None if give_up else _backoff(item.attempts),
        )
        if error is None or give_up:
            await audit.record(
                session,
                "callback.delivered" if error is None else "callback.dead",
                approval_id=item.approval_id,
                attempts=item.attempts,
                error=error,
            )


# ---------------------------------------------------------------- cards and the loops


async def refresh_due_cards(rt: Runtime, limit: int = 10) -> int:
    """The approval cards' pass of the card worker (bot.cards): re-render those votes marked
    due."""
    async with transaction(rt.sessions) as session:
        due = await repo.claim_due_cards(session, limit)
        if not due:
            return 0
        votes = await vote_repo.votes_for(session, [d.request.id for d in due])
        for d in due:
            await refresh_cards(rt, session, d.request, votes[d.request.id], d.db_now, d.cards)
        return len(due)


async def maintain_once(rt: Runtime, http: aiohttp.ClientSession) -> int:
    """One pass of expiry, warnings, escalation and callbacks; how many items it handled."""
    return (
        await expire_due(rt)
        + await warn_due(rt)
        + await escalate_due(rt)
        + await deliver_callbacks(rt, http)
    )


def _rule_of(rt: Runtime, team_id: int, risk_level: str) -> Rule | None:
    team = rt.team(team_id)
    return team.rules.get(RiskLevel(risk_level)) if team is not None else None


async def maintenance_due_in(rt: Runtime) -> float | None:
    """Seconds until the next expiry, warning, escalation or callback attempt (None: nothing
    is due)."""
    async with transaction(rt.sessions) as session:
        due = await wakeups.approvals_due_in(session)
        ages = await wakeups.escalation_ages(session)
        warnings = await wakeups.warning_times(session)
    times: list[float | None] = [due]
    for age in ages:
        rule = _rule_of(rt, age.team_id, age.risk_level)
        times.append(None if rule is None else _escalation_in(rule, age))
    for w in warnings:
        rule = _rule_of(rt, w.team_id, w.risk_level)
        times.append(None if rule is None else _warning_in(rule, w))
    return min((t for t in times if t is not None), default=None)


def _escalation_in(rule: Rule, age: wakeups.EscalationAge) -> float | None:
    """Seconds until the level's oldest request is due a reminder (None: the level has none)."""
    after = rule.escalate_after_seconds
    return None if after is None else after - age.oldest_seconds


def _warning_in(rule: Rule, times: wakeups.WarningTimes) -> float | None:
    """Seconds until the level's first expiry warning is due (None: the level warns not):
    `warn_before_seconds` before the soonest expiry, or the default window (claim_warnings)."""
    before = rule.warn_before_seconds
    if before == 0:
        return None
    return times.default_warning_in if before is None else times.expires_in - before


async def run_maintenance(rt: Runtime) -> None:
    """Expiry, escalation and callback deliveries: a pass, then sleep until the next is due
    or a request or callback is added (NOTIFY)."""
    timeout = aiohttp.ClientTimeout(total=CALLBACK_TIMEOUT_SECONDS)
    async with aiohttp.ClientSession(timeout=timeout) as http:
        with rt.wakeups.watch(wakeups.APPROVALS) as woken:
            while True:
                seconds = FALLBACK_SECONDS
                try:
                    done = await maintain_once(rt, http)
                    seconds = sleep_for(await maintenance_due_in(rt), did_work=done > 0)
                except asyncio.CancelledError:
                    raise
                except Exception:
                    log.exception("approval maintenance failed; retrying")
                    seconds = 1.0
                await woken.sleep(seconds)
