"""Token redemption: an approval token verified against its request and consumed once.
Redis is the fast gate, PostgreSQL the authority."""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from bot.approvals.decision import request_hash
from bot.errors import Conflict, NotFound, TokenRefused, TokenReplayed
from bot.policy import Team
from bot.rendering import clip
from bot.runtime import Runtime
from bot.tokens import Claims, InvalidToken
from storage import approvals as repo
from storage import audit, keys
from storage import incidents as incident_timeline
from storage import tokens as tokens_repo
from storage.db import transaction

log = logging.getLogger(__name__)

_EXPIRED = "token has expired (its exp or its request's expires_at has passed)"


@dataclass(frozen=True, slots=True)
class Redeemed:
    request: repo.RequestRecord
    approvers: tuple[int, ...]
    jti: uuid.UUID
    break_glass: bool = False


async def redeem_token(
    rt: Runtime,
    team: Team,
    token: str,
    actor: str,
    *,
    action: str | None = None,
    target: str | None = None,
) -> Redeemed:
    """Verify and consume a token once. Redis is the fast gate, PostgreSQL the authority.

    An executor that names the `action` and `target` it is about to run learns here, before
    the token is used up, that they are not what was approved.
    """
    team_id = rt.team_ids.get(team.name)
    try:
        claims = rt.tokens.verify(token)
    except InvalidToken as exc:
        await _audit(rt, "token.invalid", actor=actor, team_id=team_id, reason=str(exc))
        raise TokenRefused(str(exc)) from None
    req = await _approved_request(rt, team, team_id, claims, actor)
    await _require_approved_action(rt, req, claims, actor, action, target)
    fresh = await _pass_gate(rt, claims)
    first = fresh is not False and await _consume(rt, req, claims, actor, fresh)
    if first is None:
        await _audit(
            rt,
            "token.invalid",
            actor=actor,
            team_id=req.team_id,
            approval_id=req.id,
            reason=_EXPIRED,
            jti=str(claims.jti),
        )
        raise TokenRefused(_EXPIRED)
    if not first:
        await _audit(
            rt,
            "token.replay",
            actor=actor,
            team_id=req.team_id,
            approval_id=req.id,
            jti=str(claims.jti),
            gate="redis" if fresh is False else "postgresql",
        )
        raise TokenReplayed("this token was already redeemed")
    return Redeemed(req, claims.approvers, claims.jti, claims.break_glass)


async def _audit(rt: Runtime, event: str, *, actor: str, **fields: Any) -> None:
    async with transaction(rt.sessions) as session:
        await audit.record(session, event, actor=actor[:200], **fields)


async def _approved_request(
    rt: Runtime, team: Team, team_id: int | None, claims: Claims, actor: str
) -> repo.RequestRecord:
    """The team's approved request the token was issued for, unchanged since."""
    async with rt.sessions() as session:
        stored = await tokens_repo.token_by_jti(session, claims.jti)
        req = await repo.get(session, claims.request_id)
    problem = None
    if stored is None or req is None or stored.request_id != claims.request_id:
        problem = "token was not issued by this Quorum"
    elif req.team_id != team_id:
        raise NotFound("no such approval request")
    elif (
        stored.payload_sha256 != claims.payload_sha256
        or request_hash(req, team.name) != claims.payload_sha256
        or (claims.action, claims.target, claims.risk_level)
        != (req.action, req.target, req.risk_level)
    ):
        problem = "token does not match the approved request"
    elif req.status != "approved":
        problem = f"request is {req.status}"
    elif req.revoked_at is not None:
        await _audit(
            rt,
            "token.invalid",
            actor=actor,
            team_id=team_id,
            approval_id=req.id,
            reason="revoked",
            jti=str(claims.jti),
        )
        raise Conflict(f"the approval was revoked by {req.revoked_by}", code="revoked")
    if problem is not None or req is None:
        await _audit(
            rt,
            "token.invalid",
            actor=actor,
            team_id=team_id,
            approval_id=claims.request_id,
            reason=problem,
            jti=str(claims.jti),
        )
        raise TokenRefused(problem or "token is invalid")
    return req


async def _require_approved_action(
    rt: Runtime,
    req: repo.RequestRecord,
    claims: Claims,
    actor: str,
    action: str | None,
    target: str | None,
) -> None:
    """Refuse (audited, token left unredeemed) an action or target other than the approved."""
    approved = {"action": req.action, "target": req.target}
    asked = {k: v for k, v in (("action", action), ("target", target)) if v is not None}
    differs = [k for k, v in asked.items() if v != approved[k]]
    if not differs:
        return
    await _audit(
        rt,
        "token.action_mismatch",
        actor=actor,
        team_id=req.team_id,
        approval_id=req.id,
        jti=str(claims.jti),
        mismatched=differs,
        **{f"asked_{k}": asked[k][:200] for k in differs},
    )
    what = " and ".join(f"{k} {clip(approved[k], 200)!r}" for k in differs)
    raise Conflict(f"this token approves {what}, not what was asked", code="action_mismatch")


async def _pass_gate(rt: Runtime, claims: Claims) -> bool | None:
    """Redis's verdict: True the first time, False a replay, None when Redis is down."""
    try:
        ttl = max(60, int((claims.expires_at - datetime.now(UTC)).total_seconds()) + 120)
        return bool(await rt.redis.set(keys.token_used(claims.jti), b"1", nx=True, ex=ttl))
    except Exception:  # Redis is only the fast filter: PostgreSQL decides after it.
        log.warning(
            "redis unavailable for the token gate; PostgreSQL decides alone",
            extra={"request_id": str(claims.request_id)},
        )
        return None


async def _consume(
    rt: Runtime, req: repo.RequestRecord, claims: Claims, actor: str, fresh: bool | None
) -> bool | None:
    """PostgreSQL's verdict: True if this redemption is the first (and now recorded), False
    for a replay, None if expired: the database's clock is at or past the token's exp or the
    request's expires_at (the one clock every process agrees on; ours may lag)."""
    first: bool | None = None
    try:
        async with transaction(rt.sessions) as session:
            locked = await repo.lock(session, req.id)
            if locked is not None and locked[0].revoked_at is not None:
                # Revoked between the first look and this lock: the lock orders the two.
                raise Conflict("the approval was revoked", code="revoked")
            if locked is not None and locked[1] < min(claims.expires_at, locked[0].expires_at):
                first = await tokens_repo.redeem(session, claims.jti, req.id, actor)
            if first:
                await audit.record(
                    session,
                    "token.redeemed",
                    actor=actor[:200],
                    team_id=req.team_id,
                    approval_id=req.id,
                    jti=str(claims.jti),
                )
                if req.incident_id:
                    await incident_timeline.approval_event(
                        session,
                        req.id,
                        "approval.redeemed",
                        f"{req.action[:200]} on {req.target[:200]}: token redeemed by {actor}",
                        actor=actor[:200],
                    )
    except Exception:
        if fresh:
            await _clear_gate(rt, claims)  # not consumed after all: let a retry through
        raise
    if first is None and fresh:
        await _clear_gate(rt, claims)  # a retry is told it expired, not that it was redeemed
    return first


async def _clear_gate(rt: Runtime, claims: Claims) -> None:
    try:
        await rt.redis.delete(keys.token_used(claims.jti))
    except Exception:
        log.warning("could not clear the token gate after a redemption that did not happen")
