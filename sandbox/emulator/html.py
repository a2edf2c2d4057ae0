"""Telegram-flavoured HTML: plain text plus entities with UTF-16 offsets, and its errors."""

from __future__ import annotations

import re

from sandbox.emulator.errors import JSON, ApiError

_ENTITY_RE = re.compile(r"&(#[0-9]{1,8}|#x[0-9a-fA-F]{1,8}|lt|gt|amp|quot);")
_TAG_NAME_RE = re.compile(r"[A-Za-z0-9-]*")
_ATTR_RE = re.compile(r"\s*([A-Za-z_-]+)\s*(?:=\s*(\"[^\"]*\"|'[^']*'|[^\s>\"']+))?")

_NAMED_ENTITIES = {"lt": "<", "gt": ">", "amp": "&", "quot": '"'}
_TAG_ENTITY = {
    "b": "bold",
    "strong": "bold",
    "i": "italic",
    "em": "italic",
    "u": "underline",
    "ins": "underline",
    "s": "strikethrough",
    "strike": "strikethrough",
    "del": "strikethrough",
    "span": "spoiler",
    "tg-spoiler": "spoiler",
    "a": "text_link",
    "code": "code",
    "pre": "pre",
    "blockquote": "blockquote",
    "tg-emoji": "custom_emoji",
}
_HTML_TAGS = frozenset(_TAG_ENTITY)


def utf16_len(s: str) -> int:
    """Length in UTF-16 code units, the unit of Telegram's entity offsets."""
    n = len(s)
    for ch in s:
        if ord(ch) > 0xFFFF:
            n += 1
    return n


def parse_html(source: str) -> tuple[str, list[JSON]]:
    """Parse Telegram-flavoured HTML into (plain text, entities with UTF-16 offsets)."""
    if "<" not in source and "&" not in source:
        return source, []
    return _HtmlParser(source).parse()


def html_unescape(value: str) -> str:
    """Decode the HTML entities Telegram understands."""
    if "&" not in value:
        return value
    text, _ = parse_html(value.replace("<", "&lt;"))
    return text


def _parse_error(msg: str) -> ApiError:
    return ApiError(400, f"Bad Request: can't parse entities: {msg}")


def _decode_entity(source: str, i: int) -> tuple[str, int]:
    """The character an `&...;` at `i` stands for and where it ends (a bare `&` is itself)."""
    m = _ENTITY_RE.match(source, i)
    if m is None:
        return "&", i + 1
    name = m.group(1)
    named = _NAMED_ENTITIES.get(name)
    if named is not None:
        return named, m.end()
    code = int(name[2:], 16) if name[1] in "xX" else int(name[1:])
    bad = code > 0x10FFFF or 0xD800 <= code <= 0xDFFF
    return ("\ufffd" if bad else chr(code)), m.end()


def _raw_attributes(attr_src: str) -> dict[str, str]:
    """A start tag's attributes, names lower-cased, values unquoted and unescaped."""
    attrs: dict[str, str] = {}
    for am in _ATTR_RE.finditer(attr_src):
        if not am.group(1):
            continue
        value = am.group(2) or ""
        if value[:1] in {'"', "'"}:
            value = value[1:-1]
        attrs[am.group(1).lower()] = html_unescape(value)
    return attrs


class _HtmlParser:
    """One pass over the source; open tags wait on a stack for their end tags."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.out: list[str] = []
        self.pos16 = 0
        self.entities: list[JSON] = []
        # (tag name, UTF-16 offset where it opened, the entity's extra fields)
        self.stack: list[tuple[str, int, JSON]] = []

    def parse(self) -> tuple[str, list[JSON]]:
        source = self.source
        i = 0
        n = len(source)
        while i < n:
            ch = source[i]
            if ch == "&":
                piece, i = _decode_entity(source, i)
                self._emit(piece)
            elif ch != "<":
                i = self._text(i)
            elif source.startswith("</", i):
                i = self._end_tag(i)
            else:
                i = self._start_tag(i)
        if self.stack:
            raise _parse_error(
                f'Can\'t find end tag corresponding to start tag "{self.stack[-1][0]}"'
            )
        self.entities.sort(key=lambda e: (e["offset"], -e["length"]))
        return "".join(self.out), self.entities

    def _emit(self, piece: str) -> None:
        self.out.append(piece)
        self.pos16 += utf16_len(piece)

    def _text(self, i: int) -> int:
        source = self.source
        n = len(source)
        j = i
        while j < n and source[j] not in "<&":
            j += 1
        self._emit(source[i:j])
        return j

    def _byte_offset(self, i: int) -> int:
        return len(self.source[:i].encode("utf-8"))

    def _end_tag(self, i: int) -> int:
        offset = self._byte_offset(i)
        end = self.source.find(">", i)
        if end < 0:
            raise _parse_error(f"Unclosed end tag at byte offset {offset}")
        name = self.source[i + 2 : end].strip().lower()
        if not self.stack:
            raise _parse_error(f"Unexpected end tag at byte offset {offset}")
        open_name, start16, open_attrs = self.stack.pop()
        if name != open_name:
            raise _parse_error(
                f'Unmatched end tag at byte offset {offset}, expected "</{open_name}>", '
                f'found "</{name}>"'
            )
        if self.pos16 > start16:
            entity: JSON = {
                "type": _TAG_ENTITY[open_name],
                "offset": start16,
                "length": self.pos16 - start16,
            }
            entity.update(open_attrs)
            self.entities.append(entity)
        return end + 1

    def _start_tag(self, i: int) -> int:
        source = self.source
        offset = self._byte_offset(i)
        end = source.find(">", i)
        m = _TAG_NAME_RE.match(source, i + 1)
        name = m.group(0).lower() if m else ""
        if not name:
            raise _parse_error(f'Unsupported start tag "" at byte offset {offset}')
        if end < 0:
            raise _parse_error(f"Unclosed start tag at byte offset {offset}")
        if name not in _HTML_TAGS:
            raise _parse_error(f'Unsupported start tag "{name}" at byte offset {offset}')
        raw = _raw_attributes(source[i + 1 + len(name) : end])
        self.stack.append((name, self.pos16, self._entity_fields(name, raw, offset)))
        return end + 1

    def _entity_fields(self, name: str, raw: dict[str, str], offset: int) -> JSON:
        """The entity fields a start tag's attributes give (url, language, ...), checked."""
        fields: JSON = {}
        if name == "span" and raw.get("class") != "tg-spoiler":
            raise _parse_error(f'Tag "span" must have class "tg-spoiler" at byte offset {offset}')
        if name == "a":
            href = raw.get("href", "")
            if not href:
                raise _parse_error(f'Empty href in tag "a" at byte offset {offset}')
            fields["url"] = href
        if name == "tg-emoji":
            emoji_id = raw.get("emoji-id", "")
            if not emoji_id.isdigit():
                raise _parse_error(f"Invalid custom emoji identifier at byte offset {offset}")
            fields["custom_emoji_id"] = emoji_id
        if name == "pre" and "language" in raw:
            fields["language"] = raw["language"]
        if name == "code" and self.stack and self.stack[-1][0] == "pre":
            # <pre><code class="language-x"> sets the enclosing pre's language.
            cls = raw.get("class", "")
            if cls.startswith("language-"):
                self.stack[-1][2]["language"] = cls[len("language-") :]
        if name == "blockquote" and "expandable" in raw:
            fields["type"] = "expandable_blockquote"
        return fields
