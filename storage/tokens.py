"""Approval tokens, their single redemption, and decision callback deliveries (frozen records)."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, insert, select, type_coerce, update
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession

from storage.models import ApprovalToken, CallbackDelivery, TokenRedemption


@dataclass(frozen=True, slots=True)
class TokenRecord:
    jti: uuid.UUID
    request_id: uuid.UUID
    kid: str
    payload_sha256: str
    token: str
    issued_at: datetime
    expires_at: datetime
    redeemed_at: datetime | None


@dataclass(frozen=True, slots=True)
class CallbackRecord:
    id: int
    approval_id: uuid.UUID
    url: str
    body: dict[str, Any]
    attempts: int


async def add_token(
    session: AsyncSession,
    *,
    jti: uuid.UUID,
    request_id: uuid.UUID,
    kid: str,
    payload_sha256: str,
    token: str,
    expires_at: datetime,
) -> bool:
    """False if the request already has a token (minted once)."""
    row = (
        await session.execute(
            pg_insert(ApprovalToken)
            .values(
                jti=jti,
                request_id=request_id,
                kid=kid,
                payload_sha256=payload_sha256,
                token=token,
                expires_at=expires_at,
            )
            .on_conflict_do_nothing()
            .returning(ApprovalToken.jti)
        )
    ).first()
    return row is not None


def _token_stmt() -> Any:
    return select(
        ApprovalToken.jti,
        ApprovalToken.request_id,
        ApprovalToken.kid,
        ApprovalToken.payload_sha256,
        ApprovalToken.token,
        ApprovalToken.issued_at,
        ApprovalToken.expires_at,
        TokenRedemption.redeemed_at,
    ).outerjoin(TokenRedemption, TokenRedemption.jti == ApprovalToken.jti)


async def tokens_for(
    session: AsyncSession, request_ids: Sequence[uuid.UUID]
) -> dict[uuid.UUID, TokenRecord]:
    if not request_ids:
        return {}
    rows = await session.execute(_token_stmt().where(ApprovalToken.request_id.in_(request_ids)))
    return {r.request_id: TokenRecord(*r) for r in rows}


async def token_by_jti(session: AsyncSession, jti: uuid.UUID) -> TokenRecord | None:
    row = (await session.execute(_token_stmt().where(ApprovalToken.jti == jti))).first()
    return TokenRecord(*row) if row else None


async def redeem(
    session: AsyncSession, jti: uuid.UUID, request_id: uuid.UUID, redeemed_by: str
) -> bool:
    """The single-use authority: True for the first redemption of a jti, False ever after."""
    row = (
        await session.execute(
            pg_insert(TokenRedemption)
            .values(jti=jti, request_id=request_id, redeemed_by=redeemed_by[:128])
            .on_conflict_do_nothing()
            .returning(TokenRedemption.jti)
        )
    ).first()
    return row is not None


async def queue_callback(
    session: AsyncSession,
    approval_id: uuid.UUID,
    url: str,
    body: dict[str, Any],
    *,
    hold_seconds: float = 0,
) -> None:
    """Queue a decision callback, held `hold_seconds` (for a reason still to come) if given."""
    values: dict[str, Any] = {"approval_id": approval_id, "url": url, "body": body}
    if hold_seconds > 0:
        values["next_attempt_at"] = func.now() + timedelta(seconds=hold_seconds)
    await session.execute(insert(CallbackDelivery).values(**values))


async def release_held_callback(
    session: AsyncSession, approval_id: uuid.UUID, extra: dict[str, Any]
) -> None:
    """A callback not yet tried goes out now, with `extra` merged into its body."""
    await session.execute(
        update(CallbackDelivery)
        .where(
            CallbackDelivery.approval_id == approval_id,
            CallbackDelivery.status == "pending",
            CallbackDelivery.attempts == 0,
        )
        .values(
            next_attempt_at=func.now(),
            body=CallbackDelivery.body.op("||")(type_coerce(extra, JSONB)),
        )
    )


async def claim_callbacks(
    session: AsyncSession, limit: int, lease_seconds: int
) -> list[CallbackRecord]:
    """Due deliveries, leased (pushed into the future) so no other process sends them meanwhile."""
    due = (
        select(CallbackDelivery.id)
        .where(CallbackDelivery.status == "pending", CallbackDelivery.next_attempt_at <= func.now())
        .order_by(CallbackDelivery.next_attempt_at)
        .limit(limit)
        .with_for_update(skip_locked=True)
        .scalar_subquery()
    )
    rows = await session.execute(
        update(CallbackDelivery)
        .where(CallbackDelivery.id.in_(due))
        .values(
            attempts=CallbackDelivery.attempts + 1,
            next_attempt_at=func.now() + func.make_interval(0, 0, 0, 0, 0, 0, float(lease_seconds)),
        )
        .returning(
            CallbackDelivery.id,
            CallbackDelivery.approval_id,
            CallbackDelivery.url,
            CallbackDelivery.body,
            CallbackDelivery.attempts,
        )
    )
    return [CallbackRecord(*r) for r in rows]


async def finish_callback(
    session: AsyncSession,
    delivery_id: int,
    *,
    delivered: bool,
    error: str | None,
    retry_in_seconds: float | None,
) -> None:
    values: dict[str, Any] = {"last_error": error}
    if delivered:
        values.update(status="done", done_at=func.now())
    elif retry_in_seconds is None:
        values.update(status="dead", done_at=func.now())
    else:
        values["next_attempt_at"] = func.now() + func.make_interval(
            0, 0, 0, 0, 0, 0, float(retry_in_seconds)
        )
    await session.execute(
        update(CallbackDelivery).where(CallbackDelivery.id == delivery_id).values(**values)
    )
