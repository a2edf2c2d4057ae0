"""The voting rules as a Hypothesis state machine driving the real service and PostgreSQL.

Invariants after every step (fault matrix): approved implies at least N distinct eligible
approvers, none the requester; at most one terminal transition; at most one token and at
most one redemption per request, even after a Redis flush.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator, Coroutine
from typing import Any, TypeVar

import pytest
from aiogram import Bot
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    rule,
    run_state_machine_as_test,
)
from sqlalchemy import text

from bot import approvals, errors
from bot.buttons import uuid_ref
from bot.metrics import Metrics
from bot.policy import RiskLevel, parse_policy
from bot.runtime import Runtime
from bot.settings import load_settings
from quorum.embedded import in_process_redis
from storage import keys
from storage.db import make_engine, make_sessionmaker, transaction
from storage.teams import sync_teams
from tests.support import BOT_TOKEN, CHAT, TOKEN_SECRET, policy_data

T = TypeVar("T")
A, B, C, D, X = 1001, 1002, 1003, 1004, 1999
APPROVERS = (A, B, C, D)
_message_ids = itertools.count(1)


def make_policy(required: int, reject: int, removed: frozenset[int]) -> Any:
    data = policy_data()
    data["teams"]["platform"]["approvers"] = [
        {"telegram_id": uid, "name": f"u{uid}", "roles": []}
        for uid in APPROVERS
        if uid not in removed
    ]
    data["teams"]["platform"]["policy"] = {
        "critical": {"required_approvals": required, "reject_threshold": reject}
    }
    return parse_policy(data)


class Env:
    loop: asyncio.AbstractEventLoop
    rt: Runtime


ENV = Env()


class VoteMachine(RuleBasedStateMachine):
    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, ENV.loop).result(60)

    @initialize(
        required=st.integers(1, 3),
        reject=st.integers(1, 2),
        requester=st.sampled_from([None, A, B]),
    )
    def create(self, required: int, reject: int, requester: int | None) -> None:
        self.rt = ENV.rt
        self.removed: frozenset[int] = frozenset()
        self.required, self.reject = required, reject
        self.rt.policy = make_policy(required, reject, self.removed)
        self.requester = requester
        self.terminal: str | None = None
        self.redeemed = 0
        self.last_tap: approvals.Tap | None = None
        team = self.rt.policy.team("platform")
        new = approvals.NewRequest(
            action="restart",
            target="prod/api",
            risk_level=RiskLevel.CRITICAL,
            requested_by="ci",
            requested_by_telegram_id=requester,
        )
        req, _ = self.run(approvals.create_request(self.rt, team, new))
        self.request_id = req.id
        self.message_id = next(_message_ids)
        self.run(self.store_message_id())

    async def store_message_id(self) -> None:
        async with transaction(self.rt.sessions) as s:
            await s.execute(
                text("UPDATE telegram_messages SET message_id = :m WHERE approval_id = :a"),
                {"m": self.message_id, "a": self.request_id},
            )

    async def cast_vote(self, tap: approvals.Tap) -> str:
        async with transaction(self.rt.sessions) as s:
            try:
                result = await approvals.vote(self.rt, s, tap)
            except errors.Refused as exc:
                return exc.code
            return result.decision.value

    @rule(voter=st.sampled_from([A, B, C, X]), vote=st.sampled_from(["a", "a", "a", "r"]))
    def tap(self, voter: int, vote: str) -> None:
        ref = uuid_ref(self.request_id)
        tag = self.rt.signer.tag("ap", ref, vote, CHAT)
        tap = approvals.Tap(ref, vote, tag, CHAT, self.message_id, voter)
        self.last_tap = tap
        outcome = self.run(self.cast_vote(tap))
        if voter == X or voter in self.removed:
            assert outcome == "not_an_approver"
        if voter == self.requester and outcome not in ("request_closed", "request_expired"):
            assert outcome in ("requester_cannot_vote", "not_an_approver")

    @rule()
    def duplicate_update(self) -> None:
        if self.last_tap is None:
            return
        before = self.run(self.read_state())
        outcome = self.run(self.cast_vote(self.last_tap))
        assert outcome in (
            "already_voted",
            "request_closed",
            "request_expired",
            "not_an_approver",
            "requester_cannot_vote",
        ), outcome
        assert self.run(self.read_state())["votes"] == before["votes"]

    @rule(who=st.sampled_from([A, B, C]))
    def remove_approver(self, who: int) -> None:
        self.removed = self.removed | {who}
        self.rt.policy = make_policy(self.required, self.reject, self.removed)

    @rule()
    def advance_clock(self) -> None:
        async def go() -> None:
            async with transaction(self.rt.sessions) as s:
                await s.execute(
                    text(
                        "UPDATE approval_requests SET expires_at = now() - interval '1 second'"
                        " WHERE id = :a AND status = 'pending'"
                    ),
                    {"a": self.request_id},
                )
            await approvals.expire_due(self.rt)

        self.run(go())

    @rule()
    def flush_redis(self) -> None:
        async def flush() -> None:
            await self.rt.redis.flushdb()

        self.run(flush())

    async def redeem_once(self) -> str:
        async with self.rt.sessions() as s:
            token = (
                await s.execute(
                    text("SELECT token FROM approval_tokens WHERE request_id = :a"),
                    {"a": self.request_id},
                )
            ).scalar()
        if token is None:
            return "none"
        try:
            await approvals.redeem_token(self.rt, self.rt.policy.team("platform"), token, "t")
        except errors.TokenReplayed:
            return "replayed"
        return "ok"

    @rule()
    def redeem(self) -> None:
        outcome = self.run(self.redeem_once())
        if outcome == "ok":
            self.redeemed += 1
        if outcome == "replayed":
            assert self.redeemed == 1

    @rule()
    def replay(self) -> None:
        self.redeem()

    async def read_state(self) -> dict[str, Any]:
        async with self.rt.sessions() as s:
            row = (
                await s.execute(
                    text(
                        "SELECT r.status, r.decided_by,"
                        " (SELECT count(*) FROM votes v WHERE v.request_id = r.id) AS votes,"
                        " (SELECT count(*) FROM approval_tokens t WHERE t.request_id = r.id)"
                        "   AS tokens,"
                        " (SELECT count(*) FROM token_redemptions x WHERE x.request_id = r.id)"
                        "   AS redemptions,"
                        " (SELECT count(*) FROM audit_log a WHERE a.approval_id = r.id AND"
                        "   a.event IN ('approval.approved','approval.rejected',"
                        "   'approval.expired','approval.cancelled')) AS transitions"
                        " FROM approval_requests r WHERE r.id = :a"
                    ),
                    {"a": self.request_id},
                )
            ).one()
        return dict(row._mapping)

    @invariant()
    def promises_hold(self) -> None:
        if not hasattr(self, "request_id"):
            return
        state = self.run(self.read_state())
        status = state["status"]
        assert state["transitions"] <= 1
        assert state["tokens"] == (1 if status == "approved" else 0)
        assert state["redemptions"] <= 1 and self.redeemed <= 1
        assert state["redemptions"] == self.redeemed
        if self.terminal is not None:
            assert status == self.terminal  # left pending once, never moved again
        elif status != "pending":
            self.terminal = status
            if status == "approved":
                ids = [d["id"] for d in state["decided_by"]]
                eligible = set(self.rt.policy.team("platform").approvers)
                assert len(ids) == len(set(ids)) >= self.required
                assert self.requester not in ids
                assert set(ids) <= eligible


@pytest.fixture
async def env(db_url: str, redis_url: str) -> AsyncIterator[Env]:
    s = load_settings(token_secret=TOKEN_SECRET, database_url=db_url, redis_url=redis_url)
    engine = make_engine(db_url)
    policy = make_policy(1, 1, frozenset())
    rt = Runtime(
        settings=s,
        policy=policy,
        engine=engine,
        sessions=make_sessionmaker(engine),
        redis=keys.connect(redis_url) if redis_url else in_process_redis(),
        bot=Bot(BOT_TOKEN),
        metrics=Metrics(),
    )
    async with transaction(rt.sessions) as session:
        rt.team_ids = await sync_teams(
            session, {name: t.chat_ids for name, t in policy.teams.items()}
        )
    ENV.loop, ENV.rt = asyncio.get_running_loop(), rt
    yield ENV
    await rt.bot.session.close()
    await rt.redis.aclose()
    await engine.dispose()


async def test_voting_rules_state_machine(env: Env) -> None:
    await asyncio.to_thread(
        run_state_machine_as_test,
        VoteMachine,
        settings=settings(
            max_examples=40,
            stateful_step_count=15,
            deadline=None,
            suppress_health_check=list(HealthCheck),
        ),
    )
