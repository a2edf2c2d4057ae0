"""Approval requests through the API: intake (with idempotency and fingerprint merging),
reads, cancellation and the executor's result."""

from __future__ import annotations

import base64
import hashlib
import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from bot.approvals.decision import after_decision
from bot.approvals.outcome import outcome_of
from bot.approvals.publish import notify_alerts, post_cards, refresh_cards
from bot.approvals.reasons import reason_problem
from bot.callback_urls import callback_url_problem
from bot.errors import Conflict, Invalid, NotFound, TooManyPending, UnreachableQuorum
from bot.policy import APPROVAL_LEVEL, RiskLevel, Rule, Team
from bot.rules import trust_pattern
from bot.runtime import Runtime
from bot.trust import on_result
from bot.votes import Decision, Outcome, name_key, reach, unreachable_reason
from storage import approvals as repo
from storage import audit
from storage import incidents as incident_timeline
from storage import tokens as tokens_repo
from storage import trust as trust_repo
from storage import votes as vote_repo
from storage.db import transaction

STATUSES = ("pending", "approved", "rejected", "expired", "cancelled")
# Rounds of "look for the one it repeats, else insert" before giving up: an insert loses only
# to a concurrent request with the same key or fingerprint, which the next look then finds.
CREATE_ATTEMPTS = 5


@dataclass(frozen=True, slots=True)
class NewRequest:
    action: str
    target: str
    risk_level: RiskLevel
    requested_by: str
    requested_by_telegram_id: int | None = None
    description: str | None = None
    fingerprint: str | None = None
    incident_id: str | None = None
    metadata: dict[str, Any] | None = None
    blast_radius: dict[str, Any] | None = None
    dry_run_checks: list[Any] | None = None
    expires_in: int | None = None
    callback_url: str | None = None
    action_pattern: str | None = None  # the trust pattern; unset: the team's trust_key
    reason: str | None = None


@dataclass(frozen=True, slots=True)
class Details:
    request: repo.RequestRecord
    votes: list[vote_repo.VoteRecord]
    outcome: Outcome
    token: tokens_repo.TokenRecord | None
    cards: list[tuple[int, int]] = field(default_factory=list)


def body_digest(body: Any) -> str:
    """SHA-256 of a JSON body in canonical form (key order and spacing do not matter)."""
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


# ---------------------------------------------------------------- intake


async def create_request(
    rt: Runtime,
    team: Team,
    new: NewRequest,
    *,
    idempotency_key: str | None = None,
    body_sha256: str | None = None,
) -> tuple[repo.RequestRecord, bool]:
    """A new pending request with its cards (True), or the one it repeats (False)."""
    if new.callback_url is not None:
        problem = callback_url_problem(new.callback_url, team.callback_url_prefixes)
        if problem is not None:
            raise Invalid("callback_url", problem)
    team_id = rt.team_ids[team.name]
    rule = team.rule(new.risk_level)
    if (refused := reason_problem(rule, new.reason)) is not None:
        code, message = refused
        raise Invalid(
            "reason", f"{message} ({new.risk_level} requests of team {team.name})", code=code
        )
    _require_reachable(team, rule, new)
    async with transaction(rt.sessions) as session:
        for _ in range(CREATE_ATTEMPTS):
            if idempotency_key is not None:
                same = await _same_key(session, team_id, idempotency_key, body_sha256)
                if same is not None:
                    return same, False
            if new.fingerprint is not None:
                merged = await _merge(rt, session, team_id, new, new.fingerprint)
                if merged is not None:
                    return merged, False
            await _check_pending_cap(session, team, team_id)
            pattern = new.action_pattern or trust_pattern(team.trust_key, new.action, new.target)
            score = await trust_repo.score(session, team_id, pattern)
            created = await _insert(
                session, team_id, new, rule, idempotency_key, body_sha256, (pattern, score)
            )
            if created is None:
                continue  # lost a race on the key or the fingerprint: look again
            created = await _auto_approve(rt, session, created)
            await post_cards(rt, session, created)
            await notify_alerts(rt, session, created)
            return created, True
    raise Conflict("the request kept changing concurrently; retry", code="conflict")


async def _auto_approve(
    rt: Runtime, session: AsyncSession, created: repo.RequestRecord
) -> repo.RequestRecord:
    """The new request approved at once if an auto_approve rule (and no deny rule) takes it:
    its token minted and the rule audited with the score, in the creating transaction."""
    outcome = outcome_of(rt, created, [], created.created_at, intake=True)
    if outcome.deny_rule is not None:
        await audit.record(
            session,
            "approval.deny_matched",
            team_id=created.team_id,
            approval_id=created.id,
            rule=outcome.deny_rule,
        )
    if outcome.decision is not Decision.APPROVED or outcome.auto_rule is None:
        return created
    approved = await repo.transition(session, created.id, "approved", decided_by=[])
    if approved is None:
        return created
    approved = await repo.mark_policy(session, created.id, auto_rule=outcome.auto_rule)
    await audit.record(
        session,
        "approval.auto_approved",
        actor=f"rule {outcome.auto_rule}",
        team_id=created.team_id,
        approval_id=created.id,
        rule=outcome.auto_rule,
        trust_score=outcome.trust,
        pattern=(created.action_pattern or "")[:200],
    )
    now = approved.decided_at or approved.created_at
    await after_decision(rt, session, approved, [], now, [], actor=f"rule {outcome.auto_rule}")
    return approved


def _require_reachable(team: Team, rule: Rule, new: NewRequest) -> None:
    """Refuse a request that no votes could ever approve, rather than let it expire."""
    r = reach(
        rule,
        team.approvers,
        requester_telegram_id=new.requested_by_telegram_id,
        requester_name=new.requested_by,
    )
    reason = unreachable_reason(rule, r)
    if reason is not None:
        raise UnreachableQuorum(f"{new.risk_level} requests of team {team.name}: {reason}")


async def _check_pending_cap(session: AsyncSession, team: Team, team_id: int) -> None:
    """TooManyPending once the team has `max_pending` live requests: a flood of new ones
    cannot bury the approval chat. Repeats (key, fingerprint) still answer; concurrent
    creations may pass the cap by a few, which it tolerates."""
    pending = await repo.count_pending(session, team_id, team.max_pending)
    if pending >= team.max_pending:
        raise TooManyPending(
            f"team {team.name} has {team.max_pending} pending requests (its max_pending); "
            "decide or cancel some first"
        )


async def _same_key(
    session: AsyncSession, team_id: int, key: str, body_sha256: str | None
) -> repo.RequestRecord | None:
    """The request an Idempotency-Key already made, if its body was the same."""
    same = await repo.by_idempotency(session, team_id, key)
    if same is not None and same.body_sha256 != body_sha256:
        raise Conflict(
            "this Idempotency-Key was used with a different body", code="idempotency_conflict"
        )
    return same


async def _merge(
    rt: Runtime, session: AsyncSession, team_id: int, new: NewRequest, fingerprint: str
) -> repo.RequestRecord | None:
    """The pending request with this fingerprint, its hit count raised and cards refreshed.

    Only a request for the same action, target and risk merges: a fingerprint is the client's
    word, and a merge must never put a new ask under approvers' votes for another one.
    """
    found = await repo.merge_fingerprint(
        session,
        team_id,
        fingerprint,
        action=new.action,
        target=new.target,
        risk_level=new.risk_level.value,
    )
    if found is None:
        return None
    merged = found.merged
    if merged is None:
        raise Conflict(
            f"request {found.clash} is pending with this fingerprint for another action, "
            "target or risk level; cancel it or use another fingerprint",
            code="fingerprint_conflict",
        )
    await audit.record(
        session,
        "approval.merged",
        actor=new.requested_by[:200],
        team_id=team_id,
        approval_id=merged.id,
        hit_count=merged.hit_count,
        fingerprint=fingerprint,
    )
    votes = (await vote_repo.votes_for(session, [merged.id]))[merged.id]
    await refresh_cards(rt, session, merged, votes, merged.last_seen_at)
    await notify_alerts(rt, session, merged)
    return merged


async def _insert(
    session: AsyncSession,
    team_id: int,
    new: NewRequest,
    rule: Rule,
    idempotency_key: str | None,
    body_sha256: str | None,
    trust: tuple[str, int],
) -> repo.RequestRecord | None:
    """The new row, audited; None if a concurrent request took its key or fingerprint."""
    ttl = min(new.expires_in or rule.ttl_seconds, rule.ttl_seconds)
    created = await repo.insert_request(
        session,
        {
            "team_id": team_id,
            "action": new.action,
            "target": new.target,
            "description": new.description,
            "risk_level": new.risk_level.value,
            "approval_level": APPROVAL_LEVEL[new.risk_level],
            "required_approvals": rule.required_approvals,
            "reject_threshold": rule.reject_threshold,
            "requested_by": new.requested_by,
            "requester_telegram_id": new.requested_by_telegram_id,
            "requester_key": name_key(new.requested_by),
            "fingerprint": new.fingerprint,
            "incident_id": new.incident_id,
            "blast_radius": new.blast_radius,
            "dry_run_checks": new.dry_run_checks,
            "metadata": new.metadata,
            "idempotency_key": idempotency_key,
            "body_sha256": body_sha256,
            "callback_url": new.callback_url,
            "action_pattern": trust[0],
            "trust_score": trust[1],
            "reason": (new.reason or "").strip() or None,
        },
        ttl,
    )
    if created is None:
        return None
    await audit.record(
        session,
        "approval.created",
        actor=new.requested_by[:200],
        team_id=team_id,
        approval_id=created.id,
        risk_level=created.risk_level,
        required_approvals=created.required_approvals,
        action=created.action[:200],
        target=created.target[:200],
        reason=created.reason,
    )
    if created.incident_id:
        line = f"approval requested: {created.action[:200]} on {created.target[:200]}"
        await incident_timeline.approval_event(
            session,
            created.id,
            "approval.requested",
            f"{line} ({created.risk_level})",
            actor=new.requested_by[:200],
        )
    return created


# ---------------------------------------------------------------- reads


async def details_of(
    rt: Runtime, session: AsyncSession, reqs: Sequence[repo.RequestRecord], now: datetime
) -> list[Details]:
    ids = [r.id for r in reqs]
    votes = await vote_repo.votes_for(session, ids)
    tokens = await tokens_repo.tokens_for(session, ids)
    links = await repo.card_links(session, ids)
    return [
        Details(r, votes[r.id], outcome_of(rt, r, votes[r.id], now), tokens.get(r.id), links[r.id])
        for r in reqs
    ]


async def find_request(
    rt: Runtime, session: AsyncSession, team: Team, request_id: uuid.UUID
) -> Details:
    req = await repo.get(session, request_id)
    if req is None or req.team_id != rt.team_ids.get(team.name):
        raise NotFound("no such approval request")
    return (await details_of(rt, session, [req], datetime.now(UTC)))[0]


async def find_by_prefix(
    rt: Runtime, session: AsyncSession, team: Team, prefix: str
) -> list[Details]:
    """The team's requests whose id starts with `prefix` (lowercase hex, no dashes): none,
    the one, or two when it is ambiguous."""
    reqs = await repo.find_by_prefix(session, rt.team_ids[team.name], prefix, limit=2)
    return await details_of(rt, session, reqs, datetime.now(UTC))


async def find_requests(
    rt: Runtime,
    session: AsyncSession,
    team: Team,
    status: str | None,
    limit: int = 100,
    *,
    before: tuple[datetime, uuid.UUID] | None = None,
) -> list[Details]:
    reqs = await repo.list_for_team(session, rt.team_ids[team.name], status, limit, before=before)
    return await details_of(rt, session, reqs, datetime.now(UTC))


async def get_request(rt: Runtime, team: Team, request_id: uuid.UUID) -> Details:
    async with rt.sessions() as session:
        return await find_request(rt, session, team, request_id)


PAGE_SIZE = 50
PAGE_MAX = 100


@dataclass(frozen=True, slots=True)
class Page:
    items: list[Details]
    more: bool  # requests older than the last item exist


def cursor_of(request: repo.RequestRecord) -> str:
    """An opaque cursor for the page after this request: its (created_at, id) position."""
    raw = f"{request.created_at.isoformat()}|{request.id}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def read_cursor(cursor: str) -> tuple[datetime, uuid.UUID]:
    """The position a cursor of `cursor_of` names; Invalid for anything else."""
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        at, _, ident = text.partition("|")
        position = datetime.fromisoformat(at), uuid.UUID(ident)
    except ValueError:  # bad base64 (binascii.Error), UTF-8, time or uuid
        position = None
    if not cursor or position is None or position[0].tzinfo is None:
        raise Invalid("cursor", "not a cursor from a previous page's `next`")
    return position


async def list_page(
    rt: Runtime, team: Team, status: str | None, *, limit: int, cursor: str | None
) -> Page:
    """Up to `limit` of the team's requests, newest first, after `cursor` if given."""
    if not 1 <= limit <= PAGE_MAX:
        raise Invalid("limit", f"an integer from 1 to {PAGE_MAX}")
    before = read_cursor(cursor) if cursor is not None else None
    async with rt.sessions() as session:
        items = await find_requests(rt, session, team, status, limit + 1, before=before)
    return Page(items[:limit], more=len(items) > limit)


# ---------------------------------------------------------------- cancel, result


async def _lock_own(
    rt: Runtime, session: AsyncSession, team: Team, request_id: uuid.UUID
) -> tuple[repo.RequestRecord, datetime]:
    """The team's request, locked, with the database's clock; another team's is not found."""
    locked = await repo.lock(session, request_id)
    if locked is None or locked[0].team_id != rt.team_ids.get(team.name):
        raise NotFound("no such approval request")
    return locked


async def cancel_request(rt: Runtime, team: Team, request_id: uuid.UUID, actor: str) -> Details:
    async with transaction(rt.sessions) as session:
        req, now = await _lock_own(rt, session, team, request_id)
        if req.pending and now >= req.expires_at:
            raise Conflict("the request has expired", code="not_pending")
        cancelled = await repo.transition(session, request_id, "cancelled", require_live=False)
        if cancelled is None:
            raise Conflict(f"the request is already {req.status}", code="not_pending")
        votes = (await vote_repo.votes_for(session, [req.id]))[req.id]
        await after_decision(rt, session, cancelled, votes, now, None, actor=actor[:200])
        return (await details_of(rt, session, [cancelled], now))[0]


async def report_result(
    rt: Runtime, team: Team, request_id: uuid.UUID, success: bool, detail: str, actor: str
) -> Details:
    async with transaction(rt.sessions) as session:
        req, now = await _lock_own(rt, session, team, request_id)
        if req.status != "approved":
            raise Conflict(f"the request is {req.status}, not approved", code="not_approved")
        updated = await repo.set_result(session, request_id, success, detail)
        if updated is None:
            raise Conflict("a result was already reported", code="result_already_reported")
        await audit.record(
            session,
            "approval.result",
            actor=actor[:200],
            team_id=req.team_id,
            approval_id=req.id,
            success=success,
            detail=detail[:1000],
        )
        if req.incident_id:
            outcome = "succeeded" if success else "failed"
            await incident_timeline.approval_event(
                session,
                req.id,
                "approval.executed",
                f"{req.action[:200]} on {req.target[:200]} {outcome}: {detail[:200]}".rstrip(": "),
                actor=actor[:200],
            )
        await on_result(session, updated, actor)
        votes = (await vote_repo.votes_for(session, [req.id]))[req.id]
        await refresh_cards(rt, session, updated, votes, now)
        return (await details_of(rt, session, [updated], now))[0]
