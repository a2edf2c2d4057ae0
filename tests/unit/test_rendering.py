"""bot.rendering.fit_html: clipped HTML stays valid and within Telegram's limit."""

from __future__ import annotations

import html
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from bot.rendering import fit_html, visible_length
from sandbox.emulator import parse_html

_TAGS = ["b", "i", "u", "s", "code", "tg-spoiler"]


def _render(node: Any) -> str:
    if isinstance(node, str):
        return html.escape(node, quote=False)
    tag, children = node
    inner = "".join(_render(c) for c in children)
    if tag == "a":
        return f'<a href="https://example.com/?q=&quot;x&quot;">{inner}</a>'
    return f"<{tag}>{inner}</{tag}>"


_text = st.text(st.characters(codec="utf-8", exclude_categories=("Cs", "Cc")), max_size=40)
_nodes = st.recursive(
    _text,
    lambda children: st.tuples(st.sampled_from([*_TAGS, "a"]), st.lists(children, max_size=4)),
    max_leaves=30,
)


@settings(max_examples=300, deadline=None)
@given(st.lists(_nodes, min_size=1, max_size=8), st.integers(min_value=1, max_value=120))
def test_fit_html_keeps_html_valid_and_within_the_limit(nodes: list[Any], limit: int) -> None:
    source = "".join(_render(n) for n in nodes)
    if not parse_html(source)[0].strip():
        return
    fitted = fit_html(source, limit)
    visible, _ = parse_html(fitted)
    assert len(visible) <= limit
    assert visible_length(fitted) == len(visible)
    original, _ = parse_html(source)
    if len(original) <= limit:
        assert fitted == source
    else:
        assert visible.endswith("…")
        assert original.startswith(visible[:-1])


def test_fit_html_never_splits_an_entity_or_a_tag() -> None:
    assert fit_html("ab&amp;cd", 3) == "ab…"
    assert fit_html("<b>abcdef</b>", 4) == "<b>abc</b>…"
    assert fit_html('x<a href="https://e.x/">link text</a>', 2) == "x…"
    assert fit_html("short", 4096) == "short"
