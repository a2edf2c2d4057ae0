"""What a terminal transition causes: its audit row, the approval token, the callback, the
cards and the linked alert, all in the transaction that made it."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from bot.approvals.publish import REJECT_REASON_SECONDS, notify_alerts, refresh_cards
from bot.approvals.requester import tell_requester
from bot.policy import RiskLevel
from bot.runtime import Runtime
from bot.tokens import payload_sha256
from bot.trust import on_decision
from bot.votes import REJECT
from storage import approvals as repo
from storage import audit
from storage import incidents as incident_timeline
from storage import tokens as tokens_repo
from storage import votes as vote_repo


def request_hash(req: repo.RequestRecord, team_name: str) -> str:
    """The payload hash a token binds: a token redeems only the request it was minted for."""
    return payload_sha256(
        action=req.action,
        target=req.target,
        risk_level=req.risk_level,
        team=team_name,
        metadata=req.metadata,
        blast_radius=req.blast_radius,
        dry_run_checks=req.dry_run_checks,
        description=req.description,
    )


def decided_by(votes: Sequence[vote_repo.VoteRecord], ids: Sequence[int]) -> list[dict[str, Any]]:
    """The deciders as stored on the request: id and the name they voted under."""
    by_id = {v.voter_telegram_id: v for v in votes}
    return [{"id": i, "name": by_id[i].voter_name} for i in ids if i in by_id]


async def after_decision(
    rt: Runtime,
    session: AsyncSession,
    req: repo.RequestRecord,
    votes: Sequence[vote_repo.VoteRecord],
    now: datetime,
    cards: Sequence[tuple[int, int]] | None,
    *,
    actor: str | None = None,
    actor_telegram_id: int | None = None,
) -> str | None:
    """Everything a terminal transition causes, in its transaction; returns a new token."""
    await audit.record(
        session,
        f"approval.{req.status}",
        actor=actor,
        actor_telegram_id=actor_telegram_id,
        team_id=req.team_id,
        approval_id=req.id,
        decided_by=req.decided_by or [],
    )
    if req.incident_id:
        names = ", ".join(str(d.get("name")) for d in req.decided_by or [])
        by = f" by {names}" if names and req.status in ("approved", "rejected") else ""
        await incident_timeline.approval_event(
            session,
            req.id,
            f"approval.{req.status}",
            f"{req.action[:200]} on {req.target[:200]} {req.status}{by}",
            actor=actor,
            actor_telegram_id=actor_telegram_id,
        )
    await on_decision(session, req)
    token = await _mint_token(rt, session, req, now) if req.status == "approved" else None
    if req.callback_url:
        await _queue_callback(rt, session, req, votes, req.callback_url, token)
    await tell_requester(session, req, rt.team(req.team_id))
    await refresh_cards(rt, session, req, votes, now, cards)
    await notify_alerts(rt, session, req)
    return token


async def _mint_token(
    rt: Runtime, session: AsyncSession, req: repo.RequestRecord, now: datetime
) -> str | None:
    """The approved request's token, stored and audited; None if it already has one."""
    team = rt.team(req.team_id)
    payload_hash = request_hash(req, team.name if team else "")
    minted = rt.tokens.mint(
        request_id=req.id,
        action=req.action,
        target=req.target,
        payload_hash=payload_hash,
        approvers=[int(d["id"]) for d in req.decided_by or []],
        risk_level=req.risk_level,
        request_expires_at=req.expires_at,
        now=now,
        break_glass=req.break_glass_reason is not None,
    )
    added = await tokens_repo.add_token(
        session,
        jti=minted.jti,
        request_id=req.id,
        kid=minted.kid,
        payload_sha256=payload_hash,
        token=minted.token,
        expires_at=minted.expires_at,
    )
    if not added:
        return None
    await audit.record(
        session,
        "token.issued",
        team_id=req.team_id,
        approval_id=req.id,
        jti=str(minted.jti),
        kid=minted.kid,
        expires_at=minted.expires_at.isoformat(),
    )
    return minted.token


def callback_holds_for_reason(
    rule_requires: bool, status: str, votes: Sequence[vote_repo.VoteRecord]
) -> bool:
    """A rejection whose level requires reasons waits for the rejecters' (at most 10 min)."""
    return (
        rule_requires
        and status == "rejected"
        and any(v.decision == REJECT and v.reason is None for v in votes)
    )


def vote_reasons(votes: Sequence[vote_repo.VoteRecord]) -> list[dict[str, Any]]:
    """The reasons voters gave, as the callback and the API show them."""
    return [
        {"voter_telegram_id": v.voter_telegram_id, "voter_name": v.voter_name, "reason": v.reason}
        for v in votes
        if v.reason
    ]


async def _queue_callback(
    rt: Runtime,
    session: AsyncSession,
    req: repo.RequestRecord,
    votes: Sequence[vote_repo.VoteRecord],
    url: str,
    token: str | None,
) -> None:
    """The decision for the requester's callback URL, delivered later by the worker."""
    body: dict[str, Any] = {
        "event": "approval.decided",
        "id": str(req.id),
        "status": req.status,
        "action": req.action,
        "target": req.target,
        "risk_level": req.risk_level,
        "decided_by": req.decided_by or [],
        "decided_at": req.decided_at.isoformat() if req.decided_at else None,
        "reason": req.reason,
        "vote_reasons": vote_reasons(votes),
    }
    if token is not None:
        body["approval_token"] = token
    team = rt.team(req.team_id)
    requires = team is not None and team.rule(RiskLevel(req.risk_level)).require_reject_reason
    hold = REJECT_REASON_SECONDS if callback_holds_for_reason(requires, req.status, votes) else 0
    await tokens_repo.queue_callback(session, req.id, url, body, hold_seconds=hold)
