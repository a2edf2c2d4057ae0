"""Trust per action pattern: raised by approvals that went well, reset by anything that did
not, each change audited in the transaction that caused it; listed by API and /trust."""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncSession

from bot.buttons import keyboard
from bot.errors import ForgedButton, Invalid, NotAnApprover, NotFound, Refused
from bot.policy import Team
from bot.rendering import clip, esc
from bot.runtime import Runtime
from storage import approvals as repo
from storage import audit
from storage import trust as store
from storage.db import transaction

PAGE_SIZE = 50
PAGE_MAX = 100
MAX_LISTED = 20  # patterns /trust shows, highest score first among the first page
REF_BYTES = 12


@dataclass(frozen=True, slots=True)
class TrustPage:
    items: list[store.TrustRecord]
    next: str | None


def _deciders(req: repo.RequestRecord) -> str:
    if req.auto_rule is not None:
        return f"rule {req.auto_rule}"
    return ", ".join(str(d.get("name", d.get("id"))) for d in req.decided_by or [])[:200]


async def _reset(
    session: AsyncSession, req: repo.RequestRecord, why: str, rejecter: str | None
) -> None:
    if req.action_pattern is None:
        return
    before, after = await store.reset_score(
        session, req.team_id, req.action_pattern, rejecter=rejecter
    )
    await audit.record(
        session,
        "trust.reset",
        actor=rejecter,
        team_id=req.team_id,
        approval_id=req.id,
        pattern=req.action_pattern[:200],
        reason=why,
        score_before=before,
        total_rejections=after.total_rejections,
    )


async def on_decision(session: AsyncSession, req: repo.RequestRecord) -> None:
    """A terminal transition's effect on trust: a rejection or a break-glass resets it."""
    if req.status == "rejected":
        await _reset(session, req, "rejected", _deciders(req) or "rejected")
    elif req.status == "approved" and req.break_glass_reason is not None:
        await _reset(session, req, "break_glass", None)


async def on_result(session: AsyncSession, req: repo.RequestRecord, actor: str) -> None:
    """The executor's report: success raises the score (not after a break-glass, which is no
    evidence that the operation is routine), failure resets it."""
    if req.action_pattern is None:
        return
    if not req.result_success:
        await _reset(session, req, "failed", actor[:200])
        return
    if req.break_glass_reason is not None or req.revoked_at is not None:
        return
    after = await store.raise_score(session, req.team_id, req.action_pattern, _deciders(req))
    await audit.record(
        session,
        "trust.raised",
        actor=actor[:200],
        team_id=req.team_id,
        approval_id=req.id,
        pattern=req.action_pattern[:200],
        score=after.score,
    )


async def on_revoke(session: AsyncSession, req: repo.RequestRecord, actor: str) -> None:
    await _reset(session, req, "revoked", actor[:200])


# ---------------------------------------------------------------- reading and resetting


def _cursor(pattern: str) -> str:
    return base64.urlsafe_b64encode(pattern.encode()).decode().rstrip("=")


def _after(cursor: str) -> str:
    """The pattern a cursor of `_cursor` names; Invalid for anything else."""
    try:
        raw = base64.b64decode(cursor + "=" * (-len(cursor) % 4), altchars=b"-_", validate=True)
        after = raw.decode()
    except ValueError:  # bad base64 (binascii.Error) or UTF-8
        after = ""
    if not after or _cursor(after) != cursor:
        raise Invalid("cursor", "not a cursor from a previous page's `next`")
    return after


async def trust_page(rt: Runtime, team: Team, *, limit: int, cursor: str | None) -> TrustPage:
    """Up to `limit` of the team's patterns in pattern order, after `cursor` if given."""
    if not 1 <= limit <= PAGE_MAX:
        raise Invalid("limit", f"an integer from 1 to {PAGE_MAX}")
    after = _after(cursor) if cursor is not None else None
    async with rt.sessions() as session:
        rows = await store.page(session, rt.team_ids[team.name], limit + 1, after=after)
    more = len(rows) > limit
    return TrustPage(rows[:limit], _cursor(rows[limit - 1].pattern) if more else None)


async def reset_by_hand(
    rt: Runtime, team: Team, pattern: str, actor: str, *, actor_telegram_id: int | None = None
) -> store.TrustRecord:
    """An approver's (or an API key's) reset of one pattern, audited; NotFound if unknown."""
    team_id = rt.team_ids[team.name]
    async with transaction(rt.sessions) as session:
        if await store.get(session, team_id, pattern) is None:
            raise NotFound("no trust record for this pattern")
        before, after = await store.reset_score(session, team_id, pattern, rejecter=None)
        await audit.record(
            session,
            "trust.reset",
            actor=actor[:200],
            actor_telegram_id=actor_telegram_id,
            team_id=team_id,
            pattern=pattern[:200],
            reason="by_hand",
            score_before=before,
        )
        return after


def pattern_ref(pattern: str) -> str:
    """A short, stable reference to a pattern for a button (patterns can be long)."""
    digest = hashlib.sha256(pattern.encode()).digest()[:REF_BYTES]
    return base64.urlsafe_b64encode(digest).decode()


async def trust_text(
    rt: Runtime, session: AsyncSession, chat_id: int
) -> tuple[str, dict[str, object] | None]:
    """/trust: the team's patterns with scores, and a signed reset button for each."""
    team = rt.policy.team_for_chat(chat_id)
    if team is None:
        return "This chat is not in the policy file, so it has no trust records.", None
    rows = await store.page(session, rt.team_ids[team.name], PAGE_MAX)
    if not rows:
        return f"No trust records yet for team <b>{esc(team.name)}</b>.", None
    rows.sort(key=lambda r: (-r.score, r.pattern))
    lines = [f"<b>Trust</b> of team <b>{esc(team.name)}</b> (score · approvals · rejections):"]
    buttons = []
    for r in rows[:MAX_LISTED]:
        lines.append(
            f"<code>{clip(r.pattern, 80)}</code>: <b>{r.score}</b> · {r.total_approvals}"
            f" · {r.total_rejections}"
        )
        if r.score > 0:
            label = f"↺ Reset {r.pattern[:40]}"
            buttons.append([(label, rt.signer.trust_button(pattern_ref(r.pattern), chat_id))])
    if len(rows) > MAX_LISTED:
        lines.append(f"… +{len(rows) - MAX_LISTED} more (GET /api/v1/trust)")
    return "\n".join(lines), keyboard(buttons) if buttons else None


async def reset_by_button(rt: Runtime, chat_id: int, user_id: int, ref: str, tag: str) -> str:
    """A tap on a /trust reset button: checked (a forged one audited), then the pattern it
    names reset."""
    team = rt.policy.team_for_chat(chat_id)
    team_id = rt.team_ids.get(team.name) if team else None
    if not rt.signer.check("tr", ref, "0", chat_id, tag):
        async with transaction(rt.sessions) as session:
            await audit.record(
                session,
                "security.forged_button",
                actor_telegram_id=user_id,
                team_id=team_id,
                chat_id=chat_id,
                reason="bad_tag",
            )
        raise ForgedButton()
    approver = team.approvers.get(user_id) if team else None
    if team is None or team_id is None or approver is None:
        raise NotAnApprover("Only the team's approvers can reset trust.")
    try:
        digest = base64.urlsafe_b64decode(ref)
    except ValueError:
        raise ForgedButton() from None
    async with rt.sessions() as session:
        pattern = await store.by_digest(session, team_id, digest)
    if pattern is None:
        raise Refused("That pattern has no trust record any more.")
    await reset_by_hand(rt, team, pattern, approver.name, actor_telegram_id=user_id)
    return f"↺ Trust of {pattern[:100]} reset to 0."
