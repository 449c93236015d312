"""HTML and MarkdownV2 parsing: plain text, UTF-16 entity offsets and Telegram's errors."""

import pytest

from bot.emulator.formatting import (
    ParseError,
    command_entities,
    parse_html,
    parse_markdown_v2,
    parse_text,
)


def test_html_becomes_plain_text_with_entities():
    text, entities = parse_html(
        'Hi <b>Anna &amp; <i>Bo</i></b> <a href="https://x.test/?a=1&amp;b=2">pay</a>'
    )
    assert text == "Hi Anna & Bo pay"
    assert entities == [
        {"type": "bold", "offset": 3, "length": 9},
        {"type": "italic", "offset": 10, "length": 2},
        {"type": "text_link", "offset": 13, "length": 3, "url": "https://x.test/?a=1&b=2"},
    ]


def test_offsets_count_utf16_units_like_telegram():
    # An emoji outside the BMP counts twice, so the bold entity starts at 3, not 2.
    text, entities = parse_html("😀 <b>x</b>")
    assert text == "😀 x"
    assert entities == [{"type": "bold", "offset": 3, "length": 1}]


def test_pre_with_code_language_is_one_entity():
    _, entities = parse_html('<pre><code class="language-python">x = 1</code></pre>')
    assert entities == [{"type": "pre", "offset": 0, "length": 5, "language": "python"}]


def test_spoiler_blockquote_and_numeric_entities():
    text, entities = parse_html(
        '<tg-spoiler>a</tg-spoiler><span class="tg-spoiler">b</span>&#65;&#x42;'
    )
    assert text == "abAB"
    assert [e["type"] for e in entities] == ["spoiler", "spoiler"]
    _, quote = parse_html("<blockquote expandable>q</blockquote>")
    assert quote[0]["type"] == "expandable_blockquote"


@pytest.mark.parametrize(
    ("source", "detail"),
    [
        ("<b>unclosed", 'Can\'t find end tag corresponding to start tag "b"'),
        ("<b>x</i>", 'Unmatched end tag at byte offset 4, expected "</b>", found "</i>"'),
        ("<div>x</div>", 'Unsupported start tag "div" at byte offset 0'),
        ("</b>", "Unexpected end tag at byte offset 0"),
        ("a < b", 'Unsupported start tag "" at byte offset 2'),
        ('<span class="x">y</span>', 'Unsupported start tag "span" at byte offset 0'),
    ],
)
def test_html_errors_use_telegram_wording(source, detail):
    with pytest.raises(ParseError) as caught:
        parse_html(source)
    assert caught.value.status == 400
    assert caught.value.description == f"Bad Request: can't parse entities: {detail}"


def test_markdown_v2_entities_and_escapes():
    text, entities = parse_markdown_v2(r"*bold _it_* 1\.5 [link](https://x.test/a\)b) `c\`d`")
    assert text == "bold it 1.5 link c`d"
    assert entities == [
        {"type": "bold", "offset": 0, "length": 7},
        {"type": "italic", "offset": 5, "length": 2},
        {"type": "text_link", "offset": 12, "length": 4, "url": "https://x.test/a)b"},
        {"type": "code", "offset": 17, "length": 3},
    ]


def test_markdown_v2_pre_language_underline_spoiler_quote():
    text, entities = parse_markdown_v2("```py\nx\n``` __u__ ||s|| ~d~\n>quote")
    assert text == "x\n u s d\nquote"
    assert {e["type"] for e in entities} == {
        "pre",
        "underline",
        "spoiler",
        "strikethrough",
        "blockquote",
    }
    assert entities[0]["language"] == "py"


@pytest.mark.parametrize(
    ("source", "detail"),
    [
        ("Total: 5.00", "Character '.' is reserved and must be escaped with the preceding '\\'"),
        ("a-b", "Character '-' is reserved and must be escaped with the preceding '\\'"),
        ("*open", "Can't find end of Bold entity at byte offset 0"),
        ("x `code", "Can't find end of Code entity at byte offset 2"),
        ("[a](b", "Can't find end of TextUrl entity at byte offset 0"),
    ],
)
def test_markdown_v2_errors(source, detail):
    with pytest.raises(ParseError) as caught:
        parse_markdown_v2(source)
    assert caught.value.description == f"Bad Request: can't parse entities: {detail}"


def test_parse_mode_is_case_insensitive_and_validated():
    assert parse_text("<b>x</b>", "html") == ("x", [{"type": "bold", "offset": 0, "length": 1}])
    assert parse_text("*x*", "Markdown") == ("*x*", [])
    assert parse_text("<b>x</b>", None) == ("<b>x</b>", [])
    with pytest.raises(Exception, match="unsupported parse_mode"):
        parse_text("x", "BBCode")


def test_member_commands_get_a_bot_command_entity():
    assert command_entities("/start abc") == [{"type": "bot_command", "offset": 0, "length": 6}]
    assert command_entities("/help@payrescue_demo_bot") == [
        {"type": "bot_command", "offset": 0, "length": 24}
    ]
    assert command_entities("hello /start") == []
