"""Telegram's message formatting: HTML and MarkdownV2 into plain text plus entities.

Telegram answers a formatted message with the *plain* text and a list of entities whose
offsets count UTF-16 code units, and rejects malformed markup with 400 "can't parse
entities". Doing the same here catches the classic bugs (an unescaped ``<`` in a member's
name, an unescaped ``.`` in MarkdownV2) before they reach production.
"""

from __future__ import annotations

import html
import re
from dataclasses import dataclass, field
from typing import Any

from .errors import ApiError

MAX_TEXT_LENGTH = 4096
MAX_CAPTION_LENGTH = 1024


class ParseError(ApiError):
    def __init__(self, detail: str) -> None:
        super().__init__(400, f"Bad Request: can't parse entities: {detail}")


def utf16_len(text: str) -> int:
    return len(text.encode("utf-16-le")) // 2


def _byte_offset(source: str, index: int) -> int:
    return len(source[:index].encode("utf-8"))


@dataclass
class _Builder:
    """Accumulates plain text and tracks its length in UTF-16 units for entity offsets."""

    parts: list[str] = field(default_factory=list)
    length: int = 0
    entities: list[dict[str, Any]] = field(default_factory=list)

    def add(self, text: str) -> None:
        self.parts.append(text)
        self.length += utf16_len(text)

    def entity(self, kind: str, start: int, **extra: Any) -> None:
        if self.length > start:  # Telegram drops empty entities
            length = self.length - start
            self.entities.append({"type": kind, "offset": start, "length": length, **extra})

    def result(self) -> tuple[str, list[dict[str, Any]]]:
        # Telegram lists entities by offset, outer (longer) before inner.
        entities = sorted(self.entities, key=lambda e: (e["offset"], -e["length"]))
        return "".join(self.parts), entities


# --- HTML -------------------------------------------------------------------------------

_SIMPLE_TAGS = {
    "b": "bold",
    "strong": "bold",
    "i": "italic",
    "em": "italic",
    "u": "underline",
    "ins": "underline",
    "s": "strikethrough",
    "strike": "strikethrough",
    "del": "strikethrough",
    "tg-spoiler": "spoiler",
    "code": "code",
    "pre": "pre",
    "blockquote": "blockquote",
    "a": "text_link",
    "span": "spoiler",
    "tg-emoji": "custom_emoji",
}
_TAG_RE = re.compile(r"<(/?)([a-zA-Z][a-zA-Z0-9-]*)((?:\s+[^<>]*?)?)\s*(/?)>")
_ATTR_RE = re.compile(r"""([a-zA-Z-]+)(?:\s*=\s*(?:"([^"]*)"|'([^']*)'|([^\s"'>]+)))?""")
_ENTITY_RE = re.compile(r"&(#[0-9]+|#[xX][0-9a-fA-F]+|[a-zA-Z]+);")
_NAMED_ENTITIES = {"lt": "<", "gt": ">", "amp": "&", "quot": '"'}


def _attributes(raw: str) -> dict[str, str]:
    attrs = {}
    for match in _ATTR_RE.finditer(raw):
        name, *values = match.groups()
        attrs[name.lower()] = html.unescape(next((v for v in values if v is not None), ""))
    return attrs


def _decode_entity(match: re.Match[str]) -> str:
    name = match.group(1)
    if name.startswith(("#x", "#X")):
        return chr(int(name[2:], 16))
    if name.startswith("#"):
        return chr(int(name[1:]))
    # Telegram only knows these four named entities and leaves any other one as written.
    return _NAMED_ENTITIES.get(name.lower(), match.group(0))


def parse_html(source: str) -> tuple[str, list[dict[str, Any]]]:
    out = _Builder()
    stack: list[tuple[str, str, int, dict[str, Any]]] = []  # (tag, kind, start, extra)
    i = 0
    while i < len(source):
        char = source[i]
        if char == "<":
            match = _TAG_RE.match(source, i)
            if match is None:
                name = re.match(r"/?[a-zA-Z0-9-]*", source[i + 1 :])
                raise ParseError(
                    f'Unsupported start tag "{name.group(0) if name else ""}" '
                    f"at byte offset {_byte_offset(source, i)}"
                )
            closing, tag, raw_attrs, _self_closing = match.groups()
            tag = tag.lower()
            if closing:
                if not stack:
                    raise ParseError(f"Unexpected end tag at byte offset {_byte_offset(source, i)}")
                open_tag, kind, start, extra = stack.pop()
                if open_tag != tag:
                    raise ParseError(
                        f"Unmatched end tag at byte offset {_byte_offset(source, i)}, "
                        f'expected "</{open_tag}>", found "</{tag}>"'
                    )
                if kind == "code" and stack and stack[-1][1] == "pre":
                    # <pre><code class="language-x"> is one pre entity with a language.
                    if "language" in extra:
                        stack[-1][3]["language"] = extra["language"]
                else:
                    out.entity(kind, start, **extra)
            else:
                kind = _SIMPLE_TAGS.get(tag)
                attrs = _attributes(raw_attrs)
                if kind is None or (tag == "span" and attrs.get("class") != "tg-spoiler"):
                    raise ParseError(
                        f'Unsupported start tag "{tag}" at byte offset {_byte_offset(source, i)}'
                    )
                extra: dict[str, Any] = {}
                if tag == "a":
                    href = attrs.get("href", "")
                    if not href:
                        raise ParseError(
                            f'Can\'t find href for tag "a" at byte offset {_byte_offset(source, i)}'
                        )
                    extra["url"] = href
                elif tag == "code" and attrs.get("class", "").startswith("language-"):
                    extra["language"] = attrs["class"].removeprefix("language-")
                elif tag == "blockquote" and "expandable" in attrs:
                    kind = "expandable_blockquote"
                elif tag == "tg-emoji":
                    extra["custom_emoji_id"] = attrs.get("emoji-id", "")
                stack.append((tag, kind, out.length, extra))
            i = match.end()
        elif char == "&":
            match = _ENTITY_RE.match(source, i)
            if match is None:
                out.add("&")
                i += 1
            else:
                out.add(_decode_entity(match))
                i = match.end()
        elif char == ">":
            # A bare ">" is tolerated by Telegram, like by browsers.
            out.add(">")
            i += 1
        else:
            # Copy the run of ordinary characters up to the next markup character at once.
            stops = (source.find("<", i), source.find("&", i), source.find(">", i))
            end = min((p for p in stops if p != -1), default=len(source))
            out.add(source[i:end])
            i = end
    if stack:
        raise ParseError(f'Can\'t find end tag corresponding to start tag "{stack[-1][0]}"')
    return out.result()


# --- MarkdownV2 ---------------------------------------------------------------------------

_RESERVED = set("_*[]()~`>#+-=|{}.!")
_MD_NAMES = {
    "bold": "Bold",
    "italic": "Italic",
    "underline": "Underline",
    "strikethrough": "Strikethrough",
    "spoiler": "Spoiler",
    "text_link": "TextUrl",
    "blockquote": "BlockQuote",
}


def _read_until(source: str, i: int, terminator: str, name: str, start: int) -> tuple[str, int]:
    """Read escaped content up to `terminator` (used by code, pre and link URLs)."""
    chars = []
    while i < len(source):
        if source[i] == "\\" and i + 1 < len(source):
            chars.append(source[i + 1])
            i += 2
        elif source.startswith(terminator, i):
            return "".join(chars), i + len(terminator)
        else:
            chars.append(source[i])
            i += 1
    raise _no_end(name, source, start)


def _no_end(name: str, source: str, index: int) -> ParseError:
    offset = _byte_offset(source, index)
    return ParseError(f"Can't find end of {name} entity at byte offset {offset}")


def _reserved(char: str) -> ParseError:
    return ParseError(f"Character '{char}' is reserved and must be escaped with the preceding '\\'")


def parse_markdown_v2(source: str) -> tuple[str, list[dict[str, Any]]]:
    out = _Builder()
    open_: dict[str, tuple[int, int]] = {}  # kind -> (utf16 start, source index)
    i = 0

    def toggle(kind: str, width: int) -> None:
        nonlocal i
        if kind in open_:
            start, _ = open_.pop(kind)
            out.entity(kind, start)
        else:
            open_[kind] = (out.length, i)
        i += width

    while i < len(source):
        char = source[i]
        at_line_start = i == 0 or source[i - 1] == "\n"
        if char == "\\":
            if i + 1 >= len(source) or not 1 <= ord(source[i + 1]) <= 126:
                raise _reserved("\\")
            out.add(source[i + 1])
            i += 2
        elif char == "*":
            toggle("bold", 1)
        elif source.startswith("__", i):
            toggle("underline", 2)
        elif char == "_":
            toggle("italic", 1)
        elif char == "~":
            toggle("strikethrough", 1)
        elif source.startswith("||", i):
            toggle("spoiler", 2)
        elif source.startswith("```", i):
            start = out.length
            body, i_end = _read_until(source, i + 3, "```", "Pre", i)
            language = None
            first_line, newline, rest = body.partition("\n")
            if newline and first_line and not any(c.isspace() for c in first_line):
                language, body = first_line, rest
            out.add(body)
            out.entity("pre", start, **({"language": language} if language else {}))
            i = i_end
        elif char == "`":
            start = out.length
            body, i = _read_until(source, i + 1, "`", "Code", i)
            out.add(body)
            out.entity("code", start)
        elif char == "[":
            if "text_link" in open_:
                raise _reserved("[")
            open_["text_link"] = (out.length, i)
            i += 1
        elif char == "]" and "text_link" in open_:
            start, link_index = open_.pop("text_link")
            if not source.startswith("(", i + 1):
                raise _no_end("TextUrl", source, link_index)
            url, i = _read_until(source, i + 2, ")", "TextUrl", link_index)
            out.entity("text_link", start, url=url)
        elif char == ">" and at_line_start:
            # A quoted line: consecutive ">" lines form one blockquote entity.
            if "blockquote" not in open_:
                open_["blockquote"] = (out.length, i)
            i += 1
        elif char == "\n" and "blockquote" in open_ and not source.startswith(">", i + 1):
            start, _ = open_.pop("blockquote")
            out.entity("blockquote", start)
            out.add("\n")
            i += 1
        elif char in _RESERVED:
            raise _reserved(char)
        else:
            out.add(char)
            i += 1
    if "blockquote" in open_:
        start, _ = open_.pop("blockquote")
        out.entity("blockquote", start)
    if open_:
        kind, (_, index) = min(open_.items(), key=lambda item: item[1][1])
        raise _no_end(_MD_NAMES[kind], source, index)
    return out.result()


def parse_text(text: str, parse_mode: str | None) -> tuple[str, list[dict[str, Any]]]:
    """Plain text and entities for `text` sent with `parse_mode` (case-insensitive, as Telegram)."""
    mode = (parse_mode or "").lower()
    if not mode:
        return text, []
    if mode == "html":
        return parse_html(text)
    if mode == "markdownv2":
        return parse_markdown_v2(text)
    if mode == "markdown":
        # The legacy mode is accepted but not interpreted: nobody should start using it.
        return text, []
    raise ApiError(400, "Bad Request: unsupported parse_mode")


def command_entities(text: str) -> list[dict[str, Any]]:
    """Entities Telegram adds to a member's text: a leading /command becomes bot_command."""
    match = re.match(r"/[A-Za-z0-9_]{1,32}(?:@[A-Za-z0-9_]+)?", text)
    if not match:
        return []
    return [{"type": "bot_command", "offset": 0, "length": utf16_len(match.group(0))}]
