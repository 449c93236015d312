"""A German agent reads the whole console in German: every page, with realistic data (a
timeline with files, reminders that failed or were withdrawn, case events, e-mail members),
and the CSV downloads, headers and values alike.

The check is generic: the page's visible words (text, titles, placeholders, button labels)
must contain no English sentence of our catalog that German translates differently, and none
of the English words that once slipped through (raw keys, file kinds, delivery errors)."""

from __future__ import annotations

import re
from html.parser import HTMLParser

from payrescue import timeline
from payrescue.db.models import Alert, CannedAnswer, Conversation, Member, Outbox, RecoveryCase
from payrescue.i18n import locales_dir
from tests.handoff.conftest import log_in

# English words that are no German words: a raw key or a fallback shows through
ENGLISH = re.compile(
    r"\b(the|and|with|from|by|of|to|is|was|not|none|null|true|false|waiting|assigned|"
    r"resolved|queued|sending|sent|failed|cancelled|blocked|delivered|document|photo|voice|"
    r"animation|file|member|recovered|lost|open|opened|held|released|reminder|agent_reply|"
    r"unknown|expired_card|insufficient_funds|no_contact|bot_only|refused|undeliverable|"
    r"address|case|any|minutes?|hours?|days?|queue|new|too|long|viewing|typing|admin|agent)\b")


class _Visible(HTMLParser):
    """The words a reader sees: text outside scripts and styles, and the attributes a
    browser shows (titles, placeholders, labels, alt texts, button values, and the texts the
    page's script shows, `data-…-text`). Code (a decline
    code, a server's own error words) is shown as such on purpose and left out."""

    SHOWN = {"title", "placeholder", "aria-label", "alt", "value"}

    def __init__(self) -> None:
        super().__init__()
        self.parts: list[str] = []
        self._hidden = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in ("script", "style", "code"):
            self._hidden += 1
        shown_value = tag in ("button",) or dict(attrs).get("type") in ("submit", "button")
        for name, value in attrs:
            said_by_script = name.startswith("data-") and name.endswith("-text")
            if value and (name in self.SHOWN - {"value"} or said_by_script
                          or (name == "value" and shown_value)):
                self.parts.append(value)

    def handle_endtag(self, tag: str) -> None:
        if tag in ("script", "style", "code"):
            self._hidden -= 1

    def handle_data(self, data: str) -> None:
        if not self._hidden and data.strip():
            self.parts.append(data.strip())


def visible(page: str) -> str:
    parser = _Visible()
    parser.feed(page)
    return "\n".join(parser.parts)


def _english_sentences() -> list[str]:
    """Our English texts that German says differently, split at their placeholders: what a
    German page must not contain."""
    from babel.messages.pofile import read_po

    with (locales_dir() / "de" / "LC_MESSAGES" / "messages.po").open("rb") as po:
        catalog = read_po(po, locale="de")
    found = set()
    for message in catalog:
        if not message.id or not message.string:
            continue
        english = message.id if isinstance(message.id, str) else message.id[0]
        german = message.string if isinstance(message.string, str) else message.string[0]
        if english == german:
            continue
        for piece in re.split(r"%\(\w+\)[sd]|\{\{?\s*\w+\s*\}?\}|\{\w+\}", english):
            piece = piece.strip(" .,:;–-()")
            if len(piece) >= 12 and " " in piece:
                found.add(piece)
    return sorted(found)


def english_in(text: str, sentences: list[str], allowed: tuple[str, ...] = ()) -> list[str]:
    for word in allowed:
        text = text.replace(word, "")
    found = [s for s in sentences if s in text]
    found += sorted({m.group(0) for m in ENGLISH.finditer(text)})
    return found


# what members and the billing system wrote is theirs: it stays as they wrote it
MEMBER_WORDS = ("Mia Muster", "Tom Brenner", "Rechnung_Maerz.pdf")


async def _realistic_data(world) -> dict[str, int]:  # noqa: ANN001
    ids: dict[str, int] = {}
    ids["admin"] = await world.agent(name="Lena", role="admin", language="de")
    await world.agent("jonas@example.org", name="Jonas", language="de")
    ids["mine"] = await world.conversation(name="Mia Muster", chat_id=41,
                                           reasons=("human", "high_value"), priority=50)
    ids["waiting"] = await world.conversation(name="Tom Brenner", chat_id=42,
                                              reasons=("fraud",), language="en")
    now = world.clock.now()
    async with world.sessionmaker() as db, db.begin():
        conversation = await db.get(Conversation, ids["mine"])
        member = await db.get(Member, conversation.member_id)
        case = await db.get(RecoveryCase, conversation.case_id)
        ids["member"] = member.id
        rows = []
        for status, error, channel in (
                ("failed", "Bad Request: message is too long", "telegram"),
                ("cancelled", "blocked by the member", "telegram"),
                ("cancelled", "case recovered", "telegram"),
                ("cancelled", "some reason added later", "telegram"),
                ("failed", "address rejected 550", "email"),
                ("cancelled", "e-mail address undeliverable", "email"),
                ("failed", "refused by the server: 554 spam", "email"),
                ("queued", None, "telegram"), ("sent", None, "email")):
            row = Outbox(member_id=member.id, chat_id=41, kind="reminder", priority=5,
                         method="sendMessage", payload={"text": "Hallo Mia"}, status=status,
                         not_before=now, created_at=now, error=error, channel=channel,
                         case_id=case.id)
            db.add(row)
            rows.append(row)
        await db.flush()
        for row in rows:
            db.add(timeline.outbox_line(row, conversation.id))
        for kind, file_name, mime in (("document", None, "application/pdf"),
                                      ("document", "Rechnung_Maerz.pdf", "application/pdf"),
                                      ("video", None, "video/mp4"),
                                      ("sticker", None, None), ("animation", None, None)):
            line = timeline.entry(member.id, timeline.MEMBER, kind, now,
                                  conversation_id=conversation.id)
            line.file_id, line.file_name, line.mime_type = f"f-{kind}", file_name, mime
            db.add(line)
        db.add(timeline.entry(member.id, timeline.MEMBER, "text", now, text="Hallo, ich "
                              "habe eine Frage zur Abbuchung.", conversation_id=conversation.id,
                              telegram_message_id=7))
        for kind, data in (("case.opened", {"amount_minor": 2900, "currency": "EUR"}),
                           ("case.held", None), ("case.released", None),
                           ("case.paused", {"days": 3}), ("case.retry", {"declined": True}),
                           ("link.opened", None), ("case.card_expiring", None),
                           ("case.something_new", None)):
            timeline.case_event(db, member.id, case.id, kind, now, data=data)
        timeline.event(db, conversation, "rated", now, data={"stars": 4})
        timeline.event(db, conversation, "handoff", now, data={"reasons": ["fraud", "human"]})
        email_member = Member(name="Ute E-Mail", email="ute@example.org", language="de",
                              created_at=now, email_problem="rejected")
        db.add(email_member)
        db.add(CannedAnswer(shortcut="link", title="Neuer Link", language="de",
                            body="Hier ist Ihr Link: {{ update_link }}", created_at=now,
                            updated_at=now))
        db.add(Alert(kind="gateway_fault", provider="stripe", details={"failures": 6},
                     raised_at=now))
        # a closed case of each kind, for the dashboard and the CSV
        for status in ("recovered", "lost"):
            db.add(RecoveryCase(member_id=member.id, provider="stripe",
                                invoice_ref=f"in_{status}", amount_minor=4900,
                                currency="EUR", decline_category="expired_card",
                                decline_code="expired_card", opened_at=now,
                                last_failure_at=now, updated_at=now, status=status,
                                recovered_at=now if status == "recovered" else None,
                                lost_at=now if status == "lost" else None,
                                attribution="bot" if status == "recovered" else None))
    return ids


async def test_a_german_agent_reads_every_console_page_in_german(make_client, world) -> None:
    ids = await _realistic_data(world)
    client = await make_client()
    token = await log_in(client)  # Lena, an admin, reads German
    await client.post(f"/console/conversations/{ids['mine']}/claim",
                      data={"csrf_token": token})
    sentences = _english_sentences()
    pages = [
        "/console/queue", "/console/queue/rows?view=all", "/console/queue?view=mine",
        "/console/queue?view=all", "/console/queue?view=resolved", "/console/queue?view=bot",
        f"/console/conversations/{ids['mine']}", f"/console/conversations/{ids['waiting']}",
        f"/console/members/{ids['member']}", "/console/search?q=Mia",
        "/console/search?q=Abbuchung", "/console/canned", "/console/password",
        "/console/team", "/console/rejected-events",
        "/console/dashboard", "/console/dashboard?days=90",
        "/console/dashboard?from=2026-01-01&to=2025-01-01",
    ]
    found = {}
    for path in pages:
        response = await client.get(path)
        assert response.status in (200, 400), path
        words = english_in(visible(await response.text()), sentences, MEMBER_WORDS)
        if words:
            found[path] = words
    for path in ("/console/dashboard/figures.csv?days=30",
                 "/console/dashboard/cases.csv?days=30",
                 "/console/dashboard/cases.csv?days=30&status=recovered"):
        response = await client.get(path)
        assert response.status == 200, path
        words = english_in(await response.text(), sentences, MEMBER_WORDS)
        if words:
            found[path] = words
    summary = await (await client.get("/console/api/waiting")).json()
    words = english_in(" ".join(r for c in summary["conversations"] for r in c["reasons"]),
                       sentences)
    if words:
        found["/console/api/waiting"] = words
    assert found == {}, "\n".join(f"{p}: {w}" for p, w in found.items())
