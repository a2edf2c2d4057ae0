"""Approval requests: intake, cards, votes by button, tokens, redemption and maintenance."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import html
import json
import logging
import re
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

import aiohttp
from sqlalchemy.ext.asyncio import AsyncSession

from bot import alerts
from bot.buttons import keyboard, ref_uuid
from bot.policy import APPROVAL_LEVEL, RiskLevel, Rule, Team
from bot.rendering import MAX_TEXT, clip, esc, fmt_duration, fmt_time, href
from bot.runtime import Runtime
from bot.tokens import InvalidToken, payload_sha256
from bot.votes import APPROVE, REJECT, Ballot, Decision, Outcome, tally
from storage import approvals as repo
from storage import audit, keys
from storage.db import transaction
from storage.outbox import Priority, edit_message, enqueue_text, put_message
from storage.teams import active_chats

log = logging.getLogger(__name__)

VOTE_CODES = {"a": APPROVE, "r": REJECT}
STATUSES = ("pending", "approved", "rejected", "expired", "cancelled")
CALLBACK_MAX_ATTEMPTS = 8
CALLBACK_LEASE_SECONDS = 30
CALLBACK_TIMEOUT_SECONDS = 5.0
# A card under a storm of votes is re-rendered at most every 3 s: Telegram allows 20 edits a
# minute per group, so faster renders would only be overwritten before the sender could send
# them (they cost a third of the bot's CPU in bench.votes at 1 s). A vote after a quiet spell
# still shows at once (within the card worker's 0.2 s).
CARD_REFRESH_SECONDS = 3.0
CALLBACK_SIGNATURE_HEADER = "X-Quorum-Signature"


# ---------------------------------------------------------------- domain errors


class ApprovalError(Exception):
    """A refused operation; `code` is stable, the message is for people."""

    code = "error"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class VoteRefused(ApprovalError):
    """A tap that changes nothing; its audit row is already in the session (commit it)."""

    code = "vote_refused"
    show_alert = True


class ForgedButton(VoteRefused):
    code = "forged_button"


class NotAnApprover(VoteRefused):
    code = "not_an_approver"


class RequesterCannotVote(VoteRefused):
    code = "requester_cannot_vote"


class AlreadyVoted(VoteRefused):
    code = "already_voted"


class RequestClosed(VoteRefused):
    code = "request_closed"


class RequestExpired(VoteRefused):
    code = "request_expired"


class NotFound(ApprovalError):
    code = "not_found"


class Conflict(ApprovalError):
    code = "conflict"

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


class Invalid(ApprovalError):
    """An input the schema allowed but the policy refuses; names the field."""

    code = "validation_error"

    def __init__(self, field_name: str, message: str) -> None:
        super().__init__(f"{field_name}: {message}")
        self.field = field_name


class TokenRefused(ApprovalError):
    code = "invalid_token"


class TokenReplayed(ApprovalError):
    code = "token_replayed"


# ---------------------------------------------------------------- process-local derived keys


def callback_key(secret: str) -> bytes:
    """The HMAC key for callback signatures: derived, so it can sign nothing else."""
    return hmac.new(secret.encode(), b"quorum-callbacks-v1", hashlib.sha256).digest()


def sign_callback(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(callback_key(secret), body, hashlib.sha256).hexdigest()


# ---------------------------------------------------------------- helpers


def request_hash(req: repo.RequestRecord, team_name: str) -> str:
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


def outcome_of(
    rt: Runtime, req: repo.RequestRecord, votes: Sequence[repo.VoteRecord], now: datetime
) -> Outcome:
    team = rt.team(req.team_id)
    rule = team.rule(RiskLevel(req.risk_level)) if team else None
    if rule is None:
        rule = Rule(req.required_approvals, req.reject_threshold, 0, None)
    ballots = [Ballot(v.voter_telegram_id, v.decision) for v in votes]
    return tally(req, rule, team.approvers if team else {}, ballots, now)


def card_link(chat_id: int, message_id: int) -> str | None:
    """t.me link to a message; only supergroups and channels (-100…) have one."""
    raw = str(chat_id)
    if raw.startswith("-100"):
        return f"https://t.me/c/{raw[4:]}/{message_id}"
    return None


def mention(telegram_id: int, name: str) -> str:
    return f'<a href="{href(f"tg://user?id={telegram_id}")}">{esc(name)}</a>'


# ---------------------------------------------------------------- cards

RISK_BADGE = {"low": "🟢", "medium": "🟡", "high": "🟠", "critical": "🔴"}
STATUS_LINE = {
    "approved": "✅ <b>APPROVED</b>",
    "rejected": "❌ <b>REJECTED</b>",
    "expired": "⌛ <b>EXPIRED</b> without a decision",
    "cancelled": "🚫 <b>CANCELLED</b> by the requester",
}
MAX_VOTE_LINES = 15
_TAG_RE = re.compile(r"<[^>]*>")


def visible_length(text_html: str) -> int:
    """Characters Telegram counts: after the tags are parsed and entities decoded."""
    return len(html.unescape(_TAG_RE.sub("", text_html)))


def _compact(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(", ", ": "), sort_keys=True)


def render_card(
    req: repo.RequestRecord,
    votes: Sequence[repo.VoteRecord],
    outcome: Outcome,
    tz: ZoneInfo,
    alert_line: str | None = None,
    *,
    description_limit: int = 1000,
) -> str:
    badge = RISK_BADGE.get(req.risk_level, "⚪")
    head = f"{badge} <b>Approval request</b> · risk <b>{esc(req.risk_level.upper())}</b>"
    if not req.pending:
        head = f"{STATUS_LINE.get(req.status, esc(req.status))} · {head}"
    lines = [
        head,
        f"<b>Action:</b> <code>{clip(req.action, 300)}</code>",
        f"<b>Target:</b> <code>{clip(req.target, 300)}</code>",
    ]
    if req.description:
        lines.append(f"<blockquote>{clip(req.description, description_limit)}</blockquote>")
    if req.blast_radius:
        lines.append(f"<b>Blast radius:</b> {clip(_compact(req.blast_radius), 300)}")
    if req.dry_run_checks:
        lines.append(f"<b>Dry run:</b> {clip(_compact(req.dry_run_checks), 300)}")
    lines.append(f"<b>Requested by:</b> {clip(req.requested_by, 100)}")
    if req.hit_count > 1:
        lines.append(
            f"<b>Repeated:</b> {req.hit_count}× (last {esc(fmt_time(req.last_seen_at, tz))})"
        )
    roles = " (needs an approver with a required role)" if outcome.missing_role else ""
    lines.append(
        f"<b>Approvals:</b> {len(outcome.approvals)}/{outcome.required}{roles}"
        f" · <b>Rejects:</b> {len(outcome.rejects)}/{outcome.reject_threshold}"
    )
    ignored = set(outcome.ignored)
    for v in votes[:MAX_VOTE_LINES]:
        mark = "✅" if v.decision == APPROVE else "❌"
        who = clip(v.voter_name, 40)
        if v.voter_telegram_id in ignored:
            lines.append(f"{mark} <s>{who}</s> (does not count)")
        else:
            lines.append(f"{mark} {who} · {esc(fmt_time(v.created_at, tz))}")
    if len(votes) > MAX_VOTE_LINES:
        lines.append(f"… +{len(votes) - MAX_VOTE_LINES} more votes")
    if req.pending:
        lines.append(f"<b>Expires:</b> {esc(fmt_time(req.expires_at, tz))}")
    if alert_line:
        lines.append(alert_line)
    if req.status in ("approved", "rejected") and req.decided_by:
        names = ", ".join(str(d.get("name", d.get("id"))) for d in req.decided_by[:10])
        more = f" +{len(req.decided_by) - 10}" if len(req.decided_by) > 10 else ""
        lines.append(
            f"<b>Decided by</b> {clip(names, 400)}{more} at {esc(fmt_time(req.decided_at, tz))}"
        )
    if req.result_at is not None:
        mark = "🏁 ✅ succeeded" if req.result_success else "🏁 ⚠️ failed"
        lines.append(f"<b>Executor:</b> {mark}: {clip(req.result_detail or '', 300)}")
    lines.append(f"<i>id {req.id}</i>")
    text_html = "\n".join(lines)
    if visible_length(text_html) > MAX_TEXT and description_limit > 100:
        return render_card(req, votes, outcome, tz, alert_line, description_limit=100)
    return text_html


def card_markup(rt: Runtime, req: repo.RequestRecord, chat_id: int) -> dict[str, Any] | None:
    if not req.pending:
        return None
    approve = rt.signer.approval_button(req.id, "a", chat_id)
    reject = rt.signer.approval_button(req.id, "r", chat_id)
    return keyboard([[("✅ Approve", approve), ("❌ Reject", reject)]])


async def _alert_line(session: AsyncSession, req: repo.RequestRecord) -> str | None:
    if req.fingerprint is None and req.incident_id is None:
        return None
    return await alerts.linked_alert_line(session, req.team_id, req.fingerprint, req.incident_id)


async def _notify_alerts(rt: Runtime, session: AsyncSession, req: repo.RequestRecord) -> None:
    if req.fingerprint is None and req.incident_id is None:
        return
    await alerts.on_approval_changed(rt, session, req.team_id, req.fingerprint, req.incident_id)


async def refresh_cards(
    rt: Runtime,
    session: AsyncSession,
    req: repo.RequestRecord,
    votes: Sequence[repo.VoteRecord],
    now: datetime,
    cards: Sequence[tuple[int, int]] | None = None,
) -> None:
    """Edit every chat's card of the request in place (queued in this transaction)."""
    if cards is None:
        cards = await repo.cards_of(session, req.id)
    if not cards:
        return
    text_html = render_card(
        req,
        votes,
        outcome_of(rt, req, votes, now),
        rt.zone,
        await _alert_line(session, req),
    )
    for row_id, chat_id in cards:
        await edit_message(
            session,
            row_id,
            text_html=text_html,
            reply_markup=card_markup(rt, req, chat_id),
            priority=Priority.CARD,
        )


# ---------------------------------------------------------------- intake


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


def body_digest(body: Any) -> str:
    """SHA-256 of a JSON body in canonical form (key order and spacing do not matter)."""
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


async def create_request(
    rt: Runtime,
    team: Team,
    new: NewRequest,
    *,
    idempotency_key: str | None = None,
    body_sha256: str | None = None,
) -> tuple[repo.RequestRecord, bool]:
    """A new pending request with its cards (True), or the one it repeats (False)."""
    if new.callback_url is not None and not any(
        new.callback_url.startswith(p) for p in team.callback_url_prefixes
    ):
        raise Invalid("callback_url", "must start with one of the team's callback_url_prefixes")
    team_id = rt.team_ids[team.name]
    rule = team.rule(new.risk_level)
    ttl = min(new.expires_in or rule.ttl_seconds, rule.ttl_seconds)
    async with transaction(rt.sessions) as session:
        for _ in range(5):
            if idempotency_key is not None:
                same = await repo.by_idempotency(session, team_id, idempotency_key)
                if same is not None:
                    if same.body_sha256 != body_sha256:
                        raise Conflict(
                            "idempotency_conflict",
                            "this Idempotency-Key was used with a different body",
                        )
                    return same, False
            if new.fingerprint is not None:
                merged = await repo.merge_fingerprint(session, team_id, new.fingerprint)
                if merged is not None:
                    await audit.record(
                        session,
                        "approval.merged",
                        actor=new.requested_by[:200],
                        team_id=team_id,
                        approval_id=merged.id,
                        hit_count=merged.hit_count,
                        fingerprint=new.fingerprint,
                    )
                    votes = (await repo.votes_for(session, [merged.id]))[merged.id]
                    await refresh_cards(rt, session, merged, votes, merged.last_seen_at)
                    await _notify_alerts(rt, session, merged)
                    return merged, False
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
                    "fingerprint": new.fingerprint,
                    "incident_id": new.incident_id,
                    "blast_radius": new.blast_radius,
                    "dry_run_checks": new.dry_run_checks,
                    "metadata": new.metadata,
                    "idempotency_key": idempotency_key,
                    "body_sha256": body_sha256,
                    "callback_url": new.callback_url,
                },
                ttl,
            )
            if created is None:
                continue  # lost a race on the key or the fingerprint: look again
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
            )
            await _post_cards(rt, session, created)
            await _notify_alerts(rt, session, created)
            return created, True
    raise Conflict("conflict", "the request kept changing concurrently; retry")


async def _post_cards(rt: Runtime, session: AsyncSession, req: repo.RequestRecord) -> None:
    outcome = outcome_of(rt, req, [], req.created_at)
    text_html = render_card(req, [], outcome, rt.zone, await _alert_line(session, req))
    for chat_id in await active_chats(session, req.team_id):
        row_id = await put_message(
            session,
            chat_id=chat_id,
            purpose="approval_card",
            text_html=text_html,
            reply_markup=card_markup(rt, req, chat_id),
            priority=Priority.CARD,
            approval_id=req.id,
        )
        await audit.record(
            session,
            "card.queued",
            team_id=req.team_id,
            approval_id=req.id,
            chat_id=chat_id,
            message_row=row_id,
        )


# ---------------------------------------------------------------- reads


@dataclass(frozen=True, slots=True)
class Details:
    request: repo.RequestRecord
    votes: list[repo.VoteRecord]
    outcome: Outcome
    token: repo.TokenRecord | None
    cards: list[tuple[int, int]] = field(default_factory=list)


async def _details(
    rt: Runtime, session: AsyncSession, reqs: Sequence[repo.RequestRecord], now: datetime
) -> list[Details]:
    ids = [r.id for r in reqs]
    votes = await repo.votes_for(session, ids)
    tokens = await repo.tokens_for(session, ids)
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
    return (await _details(rt, session, [req], datetime.now(UTC)))[0]


async def find_requests(
    rt: Runtime, session: AsyncSession, team: Team, status: str | None
) -> list[Details]:
    reqs = await repo.list_for_team(session, rt.team_ids[team.name], status)
    return await _details(rt, session, reqs, datetime.now(UTC))


async def get_request(rt: Runtime, team: Team, request_id: uuid.UUID) -> Details:
    async with rt.sessions() as session:
        return await find_request(rt, session, team, request_id)


async def list_requests(rt: Runtime, team: Team, status: str | None) -> list[Details]:
    async with rt.sessions() as session:
        return await find_requests(rt, session, team, status)


# ---------------------------------------------------------------- decisions


def _decided_by(votes: Sequence[repo.VoteRecord], ids: Sequence[int]) -> list[dict[str, Any]]:
    by_id = {v.voter_telegram_id: v for v in votes}
    return [{"id": i, "name": by_id[i].voter_name} for i in ids if i in by_id]


async def _after_decision(
    rt: Runtime,
    session: AsyncSession,
    req: repo.RequestRecord,
    votes: Sequence[repo.VoteRecord],
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
    token: str | None = None
    if req.status == "approved":
        team = rt.team(req.team_id)
        approvers = [int(d["id"]) for d in req.decided_by or []]
        minted = rt.tokens.mint(
            request_id=req.id,
            action=req.action,
            target=req.target,
            payload_hash=request_hash(req, team.name if team else ""),
            approvers=approvers,
            risk_level=req.risk_level,
            request_expires_at=req.expires_at,
            now=now,
        )
        if await repo.add_token(
            session,
            jti=minted.jti,
            request_id=req.id,
            kid=minted.kid,
            payload_sha256=request_hash(req, team.name if team else ""),
            token=minted.token,
            expires_at=minted.expires_at,
        ):
            token = minted.token
            await audit.record(
                session,
                "token.issued",
                team_id=req.team_id,
                approval_id=req.id,
                jti=str(minted.jti),
                kid=minted.kid,
                expires_at=minted.expires_at.isoformat(),
            )
    if req.callback_url:
        body: dict[str, Any] = {
            "event": "approval.decided",
            "id": str(req.id),
            "status": req.status,
            "action": req.action,
            "target": req.target,
            "risk_level": req.risk_level,
            "decided_by": req.decided_by or [],
            "decided_at": req.decided_at.isoformat() if req.decided_at else None,
        }
        if token is not None:
            body["approval_token"] = token
        await repo.queue_callback(session, req.id, req.callback_url, body)
    await refresh_cards(rt, session, req, votes, now, cards)
    await _notify_alerts(rt, session, req)
    return token


# ---------------------------------------------------------------- votes by button


@dataclass(frozen=True, slots=True)
class Tap:
    ref: str
    vote: str
    tag: str
    chat_id: int
    message_id: int
    user_id: int
    user_name: str = ""


@dataclass(frozen=True, slots=True)
class VoteResult:
    request_id: uuid.UUID
    decision: Decision
    toast: str


async def _refuse(
    rt: Runtime,
    session: AsyncSession,
    tap: Tap,
    error: VoteRefused,
    reason: str,
    *,
    team_id: int | None = None,
    approval_id: uuid.UUID | None = None,
) -> VoteRefused:
    event = "security.forged_button" if isinstance(error, ForgedButton) else "vote.refused"
    await audit.record(
        session,
        event,
        actor=tap.user_name[:128] or None,
        actor_telegram_id=tap.user_id,
        team_id=team_id,
        approval_id=approval_id,
        chat_id=tap.chat_id,
        reason=reason,
        message_id=tap.message_id,
        vote=tap.vote[:8],
    )
    rt.metrics.votes.labels(error.code).inc()
    return error


async def vote(rt: Runtime, session: AsyncSession, tap: Tap) -> VoteResult:
    """Count one tap. Refusals raise VoteRefused after writing their audit row to `session`."""
    decision = VOTE_CODES.get(tap.vote)
    try:
        request_id = ref_uuid(tap.ref)
    except ValueError:
        request_id = None
    if decision is None or request_id is None:
        raise await _refuse(rt, session, tap, ForgedButton("This button is not valid."), "bad_ref")
    if not rt.signer.check("ap", tap.ref, tap.vote, tap.chat_id, tap.tag):
        raise await _refuse(
            rt, session, tap, ForgedButton("This button is not valid here."), "bad_tag"
        )
    ctx = await repo.lock_for_vote(session, request_id, tap.chat_id, tap.message_id)
    if ctx is None:
        raise await _refuse(
            rt,
            session,
            tap,
            ForgedButton("This button does not belong to this card."),
            "card_mismatch",
            approval_id=request_id,
        )
    req = ctx.request
    team = rt.team(req.team_id)
    approver = team.approvers.get(tap.user_id) if team else None

    async def refuse(error: VoteRefused, reason: str) -> VoteRefused:
        return await _refuse(
            rt, session, tap, error, reason, team_id=req.team_id, approval_id=req.id
        )

    if team is None or approver is None:
        raise await refuse(
            NotAnApprover(f"You are not an approver for team {team.name if team else '?'}."),
            "not_approver",
        )
    if not req.pending:
        raise await refuse(RequestClosed(f"This request is already {req.status}."), "closed")
    if ctx.db_now >= req.expires_at:
        raise await refuse(RequestExpired("This request has expired."), "expired")
    if req.requester_telegram_id == tap.user_id:
        raise await refuse(
            RequesterCannotVote("You asked for this: your own vote cannot count."), "requester"
        )
    inserted, votes = await repo.add_vote(
        session,
        req.id,
        team_id=req.team_id,
        voter=tap.user_id,
        name=approver.name,
        decision=decision,
        chat_id=tap.chat_id,
        message_id=tap.message_id,
        refresh_interval=CARD_REFRESH_SECONDS,
    )
    if not inserted:
        earlier = next((v.decision for v in votes if v.voter_telegram_id == tap.user_id), "")
        raise await refuse(AlreadyVoted(f"You already voted: {earlier}."), "already_voted")
    outcome = outcome_of(rt, req, votes, ctx.db_now)
    rt.metrics.votes.labels(decision).inc()
    if outcome.decision in (Decision.APPROVED, Decision.REJECTED):
        decided = await repo.transition(
            session,
            req.id,
            outcome.decision.value,
            decided_by=_decided_by(votes, outcome.deciders),
        )
        if decided is not None:
            await _after_decision(
                rt,
                session,
                decided,
                votes,
                ctx.db_now,
                ctx.cards,
                actor=approver.name,
                actor_telegram_id=tap.user_id,
            )
            toast = (
                "✅ Approved: the executor can go ahead."
                if decided.status == "approved"
                else "❌ Rejected."
            )
            return VoteResult(req.id, outcome.decision, toast)
    # The cards show this vote once the card worker re-renders them (add_vote scheduled it).
    mark = "✅ Approval" if decision == APPROVE else "❌ Rejection"
    return VoteResult(
        req.id,
        Decision.PENDING,
        f"{mark} recorded ({len(outcome.approvals)}/{outcome.required} approvals).",
    )


async def refuse_malformed(
    rt: Runtime, session: AsyncSession, *, chat_id: int, message_id: int, user_id: int
) -> ForgedButton:
    """A tap whose callback_data is not even shaped like ours: audited as forged."""
    tap = Tap("", "", "", chat_id, message_id, user_id)
    err = await _refuse(rt, session, tap, ForgedButton("This button is not valid."), "malformed")
    assert isinstance(err, ForgedButton)
    return err


# ---------------------------------------------------------------- cancel, result


async def cancel_request(rt: Runtime, team: Team, request_id: uuid.UUID, actor: str) -> Details:
    async with transaction(rt.sessions) as session:
        locked = await repo.lock(session, request_id)
        if locked is None or locked[0].team_id != rt.team_ids.get(team.name):
            raise NotFound("no such approval request")
        req, now = locked
        if req.pending and now >= req.expires_at:
            raise Conflict("not_pending", "the request has expired")
        cancelled = await repo.transition(session, request_id, "cancelled", require_live=False)
        if cancelled is None:
            raise Conflict("not_pending", f"the request is already {req.status}")
        votes = (await repo.votes_for(session, [req.id]))[req.id]
        await _after_decision(rt, session, cancelled, votes, now, None, actor=actor[:200])
        return (await _details(rt, session, [cancelled], now))[0]


async def report_result(
    rt: Runtime, team: Team, request_id: uuid.UUID, success: bool, detail: str, actor: str
) -> Details:
    async with transaction(rt.sessions) as session:
        locked = await repo.lock(session, request_id)
        if locked is None or locked[0].team_id != rt.team_ids.get(team.name):
            raise NotFound("no such approval request")
        req, now = locked
        if req.status != "approved":
            raise Conflict("not_approved", f"the request is {req.status}, not approved")
        updated = await repo.set_result(session, request_id, success, detail)
        if updated is None:
            raise Conflict("result_already_reported", "a result was already reported")
        await audit.record(
            session,
            "approval.result",
            actor=actor[:200],
            team_id=req.team_id,
            approval_id=req.id,
            success=success,
            detail=detail[:1000],
        )
        votes = (await repo.votes_for(session, [req.id]))[req.id]
        await refresh_cards(rt, session, updated, votes, now)
        return (await _details(rt, session, [updated], now))[0]


# ---------------------------------------------------------------- tokens


@dataclass(frozen=True, slots=True)
class Redeemed:
    request: repo.RequestRecord
    approvers: tuple[int, ...]
    jti: uuid.UUID


async def redeem_token(rt: Runtime, team: Team, token: str, actor: str) -> Redeemed:
    """Verify and consume a token once. Redis is the fast gate, PostgreSQL the authority."""
    team_id = rt.team_ids.get(team.name)
    try:
        claims = rt.tokens.verify(token)
    except InvalidToken as exc:
        async with transaction(rt.sessions) as session:
            await audit.record(
                session, "token.invalid", actor=actor[:200], team_id=team_id, reason=str(exc)
            )
        raise TokenRefused(str(exc)) from None
    async with rt.sessions() as session:
        stored = await repo.token_by_jti(session, claims.jti)
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
    if problem is not None or req is None:
        async with transaction(rt.sessions) as session:
            await audit.record(
                session,
                "token.invalid",
                actor=actor[:200],
                team_id=team_id,
                approval_id=claims.request_id,
                reason=problem,
                jti=str(claims.jti),
            )
        raise TokenRefused(problem or "token is invalid")
    gate = keys.token_used(claims.jti)
    fresh: bool | None = None
    try:
        ttl = max(60, int((claims.expires_at - datetime.now(UTC)).total_seconds()) + 120)
        fresh = bool(await rt.redis.set(gate, b"1", nx=True, ex=ttl))
    except Exception:  # Redis is only the fast filter: PostgreSQL decides below.
        log.warning("redis unavailable for the token gate; PostgreSQL decides alone")
    first = False
    if fresh is not False:
        try:
            async with transaction(rt.sessions) as session:
                first = await repo.redeem(session, claims.jti, req.id, actor)
                if first:
                    await audit.record(
                        session,
                        "token.redeemed",
                        actor=actor[:200],
                        team_id=req.team_id,
                        approval_id=req.id,
                        jti=str(claims.jti),
                    )
        except Exception:
            if fresh:
                # Not consumed after all: let a retry through the gate.
                try:
                    await rt.redis.delete(gate)
                except Exception:
                    log.warning("could not clear the token gate after a failed redemption")
            raise
    if not first:
        async with transaction(rt.sessions) as session:
            await audit.record(
                session,
                "token.replay",
                actor=actor[:200],
                team_id=req.team_id,
                approval_id=req.id,
                jti=str(claims.jti),
                gate="redis" if fresh is False else "postgresql",
            )
        raise TokenReplayed("this token was already redeemed")
    return Redeemed(req, claims.approvers, claims.jti)


# ---------------------------------------------------------------- commands


def _status_word(d: Details) -> str:
    return (
        f"{d.request.status} · {len(d.outcome.approvals)}/{d.outcome.required} approvals"
        f" · {len(d.outcome.rejects)}/{d.outcome.reject_threshold} rejects"
    )


async def pending_text(rt: Runtime, session: AsyncSession, chat_id: int) -> str:
    team = rt.policy.team_for_chat(chat_id)
    if team is None:
        return "This chat is not in the policy file, so it has no requests."
    items = await find_requests(rt, session, team, "pending")
    if not items:
        return f"No open requests for team <b>{esc(team.name)}</b>."
    tz = rt.zone
    lines = [f"<b>Open requests</b> of team <b>{esc(team.name)}</b>: {len(items)}"]
    for d in items[:20]:
        r = d.request
        link = next((card_link(c, m) for c, m in d.cards if c == chat_id), None)
        title = f"{clip(r.action, 60)} → {clip(r.target, 60)}"
        if link:
            title = f'<a href="{href(link)}">{title}</a>'
        lines.append(
            f"• {RISK_BADGE.get(r.risk_level, '')} {title} · "
            f"{len(d.outcome.approvals)}/{d.outcome.required} · "
            f"expires {esc(fmt_time(r.expires_at, tz))}\n  <code>{r.id}</code>"
        )
    if len(items) > 20:
        lines.append(f"… +{len(items) - 20} more")
    return "\n".join(lines)


async def status_text(rt: Runtime, session: AsyncSession, chat_id: int, arg: str) -> str:
    team = rt.policy.team_for_chat(chat_id)
    if team is None:
        return "This chat is not in the policy file, so it has no requests."
    try:
        request_id = uuid.UUID(arg.strip())
    except ValueError:
        return "Usage: /status &lt;request id&gt; (the id at the bottom of a card)"
    try:
        d = await find_request(rt, session, team, request_id)
    except NotFound:
        return f"No request <code>{esc(arg.strip())}</code> in team <b>{esc(team.name)}</b>."
    r, tz = d.request, rt.zone
    lines = [
        f"{RISK_BADGE.get(r.risk_level, '')} <b>{clip(r.action, 200)}</b> → "
        f"<code>{clip(r.target, 200)}</code>",
        f"Status: <b>{esc(_status_word(d))}</b>",
        f"Requested by {clip(r.requested_by, 100)} at {esc(fmt_time(r.created_at, tz))}",
    ]
    if r.pending:
        left = (r.expires_at - datetime.now(UTC)).total_seconds()
        lines.append(f"Expires {esc(fmt_time(r.expires_at, tz))} (~{fmt_duration(left)})")
    for v in d.votes[:20]:
        lines.append(f"{'✅' if v.decision == APPROVE else '❌'} {clip(v.voter_name, 40)}")
    link = next((card_link(c, m) for c, m in d.cards if c == chat_id), None)
    if link:
        lines.append(f'<a href="{href(link)}">Open the card</a>')
    return "\n".join(lines)


def whoami_text(rt: Runtime, user_id: int, first_name: str) -> str:
    lines = [f"{esc(first_name)}: your Telegram id is <code>{user_id}</code>."]
    teams = rt.policy.teams_of(user_id)
    if not teams:
        lines.append("You are not an approver in any team.")
    for t in teams:
        roles = ", ".join(sorted(t.approvers[user_id].roles)) or "no roles"
        lines.append(f"Approver in <b>{esc(t.name)}</b> ({esc(roles)})")
    return "\n".join(lines)


# ---------------------------------------------------------------- maintenance


async def expire_due(rt: Runtime, limit: int = 50) -> int:
    """Pending requests past expires_at become expired; safe with several processes."""
    async with transaction(rt.sessions) as session:
        due = await repo.claim_expired(session, limit)
        for req in due:
            expired = await repo.transition(session, req.id, "expired", require_live=False)
            if expired is None:
                continue
            votes = (await repo.votes_for(session, [req.id]))[req.id]
            await _after_decision(rt, session, expired, votes, expired.updated_at, None)
        return len(due)


async def escalate_due(rt: Runtime) -> int:
    """One reminder per request after escalate_after_seconds, naming who has not voted."""
    sent = 0
    tz = rt.zone
    for name, team in rt.policy.teams.items():
        team_id = rt.team_ids.get(name)
        if team_id is None:
            continue
        for level, rule in team.rules.items():
            if rule.escalate_after_seconds is None:
                continue
            async with transaction(rt.sessions) as session:
                due = await repo.claim_escalations(
                    session, team_id, level.value, rule.escalate_after_seconds
                )
                if not due:
                    continue
                votes = await repo.votes_for(session, [r.id for r in due])
                links = await repo.card_links(session, [r.id for r in due])
                for req in due:
                    voted = {v.voter_telegram_id for v in votes[req.id]}
                    waiting = [
                        a
                        for a in team.approvers.values()
                        if a.telegram_id not in voted and a.telegram_id != req.requester_telegram_id
                    ]
                    outcome = outcome_of(rt, req, votes[req.id], datetime.now(UTC))
                    mentions = ", ".join(mention(a.telegram_id, a.name) for a in waiting[:30])
                    body = (
                        f"⏰ <b>Still waiting</b> ({fmt_duration(rule.escalate_after_seconds)}): "
                        f"<code>{clip(req.action, 200)}</code> on "
                        f"<code>{clip(req.target, 200)}</code> has "
                        f"{len(outcome.approvals)}/{outcome.required} approvals, expires "
                        f"{esc(fmt_time(req.expires_at, tz))}.\n"
                        f"{mentions or 'Nobody left to ask.'}"
                    )
                    cards = dict(links[req.id])
                    for chat_id in await active_chats(session, team_id):
                        await enqueue_text(
                            session,
                            chat_id,
                            body,
                            priority=Priority.REPLY,
                            kind="escalation",
                            reply_to=cards.get(chat_id),
                        )
                    await repo.mark_escalated(session, req.id)
                    await audit.record(
                        session,
                        "approval.escalated",
                        team_id=team_id,
                        approval_id=req.id,
                        waiting=[a.telegram_id for a in waiting],
                    )
                    sent += 1
    return sent


def _backoff(attempts: int) -> float:
    return float(min(300, 2 ** max(0, attempts - 1)))


async def deliver_callbacks(rt: Runtime, http: aiohttp.ClientSession, limit: int = 10) -> int:
    """POST decisions to callback URLs, signed; retried with backoff, then given up."""
    async with transaction(rt.sessions) as session:
        due = await repo.claim_callbacks(session, limit, CALLBACK_LEASE_SECONDS)
    secret = rt.settings.token_secret.get_secret_value()
    for item in due:
        body = json.dumps(item.body, separators=(",", ":"), sort_keys=True).encode()
        headers = {
            "Content-Type": "application/json",
            CALLBACK_SIGNATURE_HEADER: sign_callback(secret, body),
            "X-Quorum-Delivery": str(item.id),
        }
        error: str | None = None
        try:
            async with http.post(item.url, data=body, headers=headers) as resp:
                if not 200 <= resp.status < 300:
                    error = f"HTTP {resp.status}"
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            error = type(exc).__name__
        give_up = error is not None and item.attempts >= CALLBACK_MAX_ATTEMPTS
        async with transaction(rt.sessions) as session:
            await repo.finish_callback(
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
    return len(due)


async def refresh_due_cards(rt: Runtime, limit: int = 10) -> int:
    """One pass of the card worker: re-render the cards of requests that votes marked due."""
    async with transaction(rt.sessions) as session:
        due = await repo.claim_due_cards(session, limit)
        if not due:
            return 0
        votes = await repo.votes_for(session, [d.request.id for d in due])
        for d in due:
            await refresh_cards(rt, session, d.request, votes[d.request.id], d.db_now, d.cards)
        return len(due)


async def run_cards(rt: Runtime, idle: float = 0.2) -> None:
    """The card worker: votes show on their cards within about `idle` seconds. A failure
    (a database restart) ends it; the app's supervisor logs it and starts it again."""
    while True:
        if not await refresh_due_cards(rt):
            await asyncio.sleep(idle)


async def maintain_once(rt: Runtime, http: aiohttp.ClientSession) -> None:
    await expire_due(rt)
    await escalate_due(rt)
    await deliver_callbacks(rt, http)


async def run_maintenance(rt: Runtime, interval: float = 1.0) -> None:
    """Expiry, escalation and callback deliveries, about once a second."""
    timeout = aiohttp.ClientTimeout(total=CALLBACK_TIMEOUT_SECONDS)
    async with aiohttp.ClientSession(timeout=timeout) as http:
        while True:
            try:
                await maintain_once(rt, http)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("approval maintenance failed; retrying")
            await asyncio.sleep(interval)
