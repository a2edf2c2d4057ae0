"""Button tags survive a rotation of the token secret: signed with the current key, checked
against it and the previous ones."""

from __future__ import annotations

import uuid

import pytest

from bot.buttons import ApprovalVote, ButtonSigner

OLD, NEW, OTHER = "o" * 40, "n" * 40, "x" * 40
REQUEST = uuid.UUID(int=42)
CHAT = -100123


def tag_of(signer: ButtonSigner, vote: str = "a", chat: int = CHAT) -> ApprovalVote:
    return ApprovalVote.unpack(signer.approval_button(REQUEST, vote, chat))


def checks(signer: ButtonSigner, button: ApprovalVote, chat: int = CHAT) -> bool:
    return signer.check("ap", button.ref, button.vote, chat, button.tag)


def test_a_tag_from_before_the_rotation_verifies_with_the_previous_key() -> None:
    old_button = tag_of(ButtonSigner(OLD))
    assert not checks(ButtonSigner(NEW), old_button)  # without the previous key: refused
    assert checks(ButtonSigner(NEW, [OLD]), old_button)
    assert checks(ButtonSigner(NEW, [OTHER, OLD]), old_button)


def test_new_tags_are_signed_with_the_current_key() -> None:
    rotated = ButtonSigner(NEW, [OLD])
    button = tag_of(rotated)
    assert button == tag_of(ButtonSigner(NEW))
    assert checks(ButtonSigner(NEW), button)
    assert not checks(ButtonSigner(OLD), button)


@pytest.mark.parametrize(
    ("vote", "chat", "tag"),
    [
        ("r", CHAT, None),  # the approve tag used for reject
        ("a", CHAT - 1, None),  # another chat
        ("a", CHAT, "A" * 16),  # a made-up tag
    ],
)
def test_previous_keys_do_not_widen_what_a_tag_is_good_for(
    vote: str, chat: int, tag: str | None
) -> None:
    button = tag_of(ButtonSigner(OLD))
    forged = ApprovalVote(ref=button.ref, vote=vote, tag=tag or button.tag)
    assert not checks(ButtonSigner(NEW, [OLD]), forged, chat)
