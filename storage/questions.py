"""Questions put to one person by ForceReply, and their answers (rows shared by replicas)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from storage.models import OutboxItem, Question, TelegramMessage


@dataclass(frozen=True, slots=True)
class QuestionRecord:
    id: int
    kind: str
    chat_id: int
    asked_telegram_id: int
    subject: dict[str, Any]
    expires_at: datetime
    answered_at: datetime | None
    answer: str | None
    message_row_id: int


def _record(q: Question) -> QuestionRecord:
    return QuestionRecord(
        id=q.id,
        kind=q.kind,
        chat_id=q.chat_id,
        asked_telegram_id=q.asked_telegram_id,
        subject=dict(q.subject or {}),
        expires_at=q.expires_at,
        answered_at=q.answered_at,
        answer=q.answer,
        message_row_id=q.message_row_id,
    )


async def add(
    session: AsyncSession,
    *,
    kind: str,
    message_row_id: int,
    chat_id: int,
    asked_telegram_id: int,
    subject: dict[str, Any],
    ttl_seconds: float,
) -> int:
    """A question whose message (telegram_messages row) is queued; returns its id."""
    qid: int = (
        await session.execute(
            insert(Question)
            .values(
                kind=kind,
                message_row_id=message_row_id,
                chat_id=chat_id,
                asked_telegram_id=asked_telegram_id,
                subject=subject,
                expires_at=func.now() + timedelta(seconds=ttl_seconds),
            )
            .returning(Question.id)
        )
    ).scalar_one()
    return qid


async def asked_by_message(
    session: AsyncSession, chat_id: int, message_id: int
) -> QuestionRecord | None:
    """The question the bot's message `message_id` in `chat_id` asks, if it is one."""
    row = await session.scalar(
        select(Question)
        .join(TelegramMessage, TelegramMessage.id == Question.message_row_id)
        .where(TelegramMessage.chat_id == chat_id, TelegramMessage.message_id == message_id)
    )
    return _record(row) if row else None


async def being_sent(session: AsyncSession, chat_id: int, user_id: int) -> bool:
    """Whether an open question to `user_id` in `chat_id` is being sent right now: Telegram
    shows the message before the sender learns its id, so a reply can arrive first."""
    in_flight = (
        select(Question.id)
        .join(TelegramMessage, TelegramMessage.id == Question.message_row_id)
        .join(OutboxItem, OutboxItem.telegram_message_id == TelegramMessage.id)
        .where(
            Question.chat_id == chat_id,
            Question.asked_telegram_id == user_id,
            Question.answered_at.is_(None),
            Question.expires_at > func.now(),
            TelegramMessage.message_id.is_(None),
            OutboxItem.status == "sending",
            OutboxItem.claimed_until > func.now(),
        )
        .exists()
    )
    return bool(await session.scalar(select(in_flight)))


async def take_answer(session: AsyncSession, question_id: int, text: str) -> QuestionRecord | None:
    """Store the answer if the question is still open (unanswered, not expired): the first
    reply wins, even between replicas; None when it was too late or already answered."""
    row = await session.scalar(
        update(Question)
        .where(
            Question.id == question_id,
            Question.answered_at.is_(None),
            Question.expires_at > func.now(),
        )
        .values(answered_at=func.now(), answer=text)
        .returning(Question)
    )
    return _record(row) if row else None


async def open_for(
    session: AsyncSession, kind: str, subject_key: str, subject_value: Any
) -> list[QuestionRecord]:
    """Open questions of `kind` about one subject (e.g. the reasons a request waits for)."""
    rows = await session.scalars(
        select(Question).where(
            Question.kind == kind,
            Question.subject[subject_key].astext == str(subject_value),
            Question.answered_at.is_(None),
            Question.expires_at > func.now(),
        )
    )
    return [_record(r) for r in rows]
