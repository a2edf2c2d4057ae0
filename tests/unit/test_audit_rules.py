"""The audit chain's pure rules: the canonical encoding, linking, checkpoint signatures."""

from __future__ import annotations

import dataclasses
import itertools
import uuid
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bot.audit import chain
from storage.audit import AuditRow

ROW = AuditRow(
    id=7,
    at=datetime(2026, 11, 27, 13, 55, 0, 123456, tzinfo=UTC),
    event="vote.accepted",
    actor="alice",
    actor_telegram_id=1001,
    team_id=1,
    approval_id=uuid.UUID("12345678-1234-5678-1234-567812345678"),
    alert_id=None,
    chat_id=-100,
    detail={"decision": "approve", "reason": "ok ✓", "a": [1, 2.5]},
    xid=900,
    seq=None,
    prev_hash=None,
    hash=None,
)


def test_canonical_encoding_is_the_documented_one() -> None:
    assert (
        chain.canonical(ROW, 3)
        == (
            '{"actor":"alice","actor_telegram_id":1001,"alert_id":null,'
            '"approval_id":"12345678-1234-5678-1234-567812345678",'
            '"at":"2026-11-27T13:55:00.123456+00:00","chat_id":-100,'
            '"detail":{"a":[1,2.5],"decision":"approve","reason":"ok ✓"},'
            '"event":"vote.accepted","id":7,"seq":3,"team_id":1,"xid":900}'
        ).encode()
    )


def test_the_time_is_encoded_in_utc_whatever_zone_it_comes_in() -> None:
    berlin = ROW.at.astimezone(timezone(timedelta(hours=1)))
    assert chain.canonical(dataclasses.replace(ROW, at=berlin), 1) == chain.canonical(ROW, 1)


def test_a_chain_links_each_row_to_the_one_before() -> None:
    rows = [dataclasses.replace(ROW, id=i) for i in range(1, 4)]
    links = chain.chain(chain.GENESIS, 1, rows)
    assert [(i, s) for i, s, _, _ in links] == [(1, 1), (2, 2), (3, 3)]
    assert links[0][2] == chain.GENESIS
    for (_, _, _, digest), (_, _, prev, _) in itertools.pairwise(links):
        assert prev == digest
    assert links[1][3] == chain.link(links[0][3], rows[1], 2)


CHANGES: dict[str, Any] = {
    "id": 8,
    "at": ROW.at + timedelta(microseconds=1),
    "event": "vote.refused",
    "actor": "mallory",
    "actor_telegram_id": 1002,
    "team_id": 2,
    "approval_id": uuid.UUID(int=1),
    "alert_id": 1,
    "chat_id": -101,
    "detail": {"decision": "reject"},
    "xid": 901,
}


@given(st.sampled_from(sorted(CHANGES)), st.integers(min_value=1, max_value=10**9))
def test_any_changed_field_or_place_changes_the_hash(field: str, seq: int) -> None:
    before = chain.link(chain.GENESIS, ROW, seq)
    assert (
        chain.link(chain.GENESIS, dataclasses.replace(ROW, **{field: CHANGES[field]}), seq)
        != before
    )
    assert chain.link(chain.GENESIS, ROW, seq + 1) != before
    assert chain.link(bytes([1]) * 32, ROW, seq) != before


def test_a_checkpoint_verifies_only_as_signed_and_with_its_key() -> None:
    key = chain.load_private_key(chain.new_private_key())
    signed = chain.sign(key, 42, bytes(range(32)), ROW.at)
    public = key.public_key()
    assert chain.signature_valid(public, signed)
    assert chain.Checkpoint.from_json(signed.to_json()) == signed
    for forged in (
        dataclasses.replace(signed, seq=43),
        dataclasses.replace(signed, hash=bytes(32)),
        dataclasses.replace(signed, signed_at=ROW.at + timedelta(seconds=1)),
    ):
        assert not chain.signature_valid(public, forged)
    other = chain.load_private_key(chain.new_private_key()).public_key()
    assert not chain.signature_valid(other, signed)
    assert signed.key_id == chain.key_id(public) != chain.key_id(other)


@pytest.mark.parametrize(
    "document",
    [
        [],
        {},
        {"seq": 1, "hash": "zz", "at": "2026-11-27T00:00:00+00:00", "key_id": "k", "signature": ""},
        {
            "seq": 0,
            "hash": "00" * 32,
            "at": "2026-11-27T00:00:00+00:00",
            "key_id": "k",
            "signature": "",
        },
        {"seq": 1, "hash": "00" * 32, "at": "2026-11-27T00:00:00", "key_id": "k", "signature": ""},
        {
            "seq": 1,
            "hash": "00" * 32,
            "at": "2026-11-27T00:00:00Z",
            "key_id": "k",
            "signature": "!",
        },
        {
            "seq": "1",
            "hash": "00" * 32,
            "at": "2026-11-27T00:00:00Z",
            "key_id": "k",
            "signature": "",
        },
    ],
)
def test_a_malformed_checkpoint_document_is_refused(document: Any) -> None:
    with pytest.raises(ValueError, match="checkpoint"):
        chain.Checkpoint.from_json(document)


@pytest.mark.parametrize("text", ["", "not base64!", "AAAA", "A" * 44 + "AAAA"])
def test_a_key_setting_that_is_not_an_ed25519_seed_is_refused(text: str) -> None:
    with pytest.raises(ValueError, match="base64"):
        chain.load_private_key(text)
