"""The emulator's HTML parser, as Telegram parses parse_mode=HTML into text and entities."""

from __future__ import annotations

from sandbox.emulator import parse_html


def test_parse_html_gives_text_and_entities() -> None:
    text, entities = parse_html('<pre><code class="language-py">x</code></pre>&quot;')
    assert text == 'x"'
    assert {"type": "pre", "offset": 0, "length": 1, "language": "py"} in entities
    assert parse_html("plain > text") == ("plain > text", [])
