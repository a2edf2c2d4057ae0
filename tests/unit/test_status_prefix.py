"""What /status accepts as a request id: a whole id or at least 8 of its hex digits."""

from __future__ import annotations

import pytest

from bot.approvals.texts import id_prefix


@pytest.mark.parametrize(
    ("typed", "prefix"),
    [
        ("0b5f1c2e", "0b5f1c2e"),
        ("  0B5F1C2E-3d4a ", "0b5f1c2e3d4a"),
        ("0b5f1c2e-3d4a-4b6c-8d9e-0f1a2b3c4d5e", "0b5f1c2e3d4a4b6c8d9e0f1a2b3c4d5e"),
        ("0b5f1c2", None),  # 7 digits: too short to be unique in practice
        ("0b5f-1c2", None),  # dashes do not count as digits
        ("0b5f1c2g", None),
        ("", None),
        ("0b5f1c2e3d4a4b6c8d9e0f1a2b3c4d5e0", None),  # longer than an id
    ],
)
def test_id_prefix(typed: str, prefix: str | None) -> None:
    assert id_prefix(typed) == prefix
