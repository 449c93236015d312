"""What a member's free text is about, in German or English.

Matching is forgiving the way people type on a phone: case does not matter, umlauts may be
written as ae/oe/ue (or dropped), and a word with a small typo still counts (rapidfuzz
similarity). Each intent lists cue words and short phrases in both languages; the intent
with the strongest cues wins. Unknown text returns None, so the caller can count it.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from functools import cache

from rapidfuzz import fuzz

WORD = re.compile(r"[a-z0-9]+")
MIN_FUZZY_LENGTH = 5  # shorter words must match exactly: "card" vs "cart" is not a typo
FUZZY_SCORE = 84.0

# intent → cue words (single words, or phrases of several words that must all appear)
INTENTS: dict[str, tuple[str, ...]] = {
    "why_failed": (
        "why", "failed", "declined", "rejected", "fail", "warum", "wieso", "weshalb",
        "fehlgeschlagen", "abgelehnt", "geklappt", "funktioniert", "problem",
    ),
    "retry_when": (
        "retry", "again", "next attempt", "try again", "when charge", "wann", "erneut",
        "nochmal", "wieder", "abbuchen", "abgebucht", "naechster versuch",
    ),
    "update_card": (
        "update", "change card", "new card", "card", "payment method", "aendern", "karte",
        "kreditkarte", "zahlungsmethode", "zahlungsart", "aktualisieren", "hinterlegen",
        "iban", "konto",
    ),
    "status": (
        "owe", "how much", "balance", "status", "amount", "outstanding", "schulde",
        "offen", "betrag", "wieviel", "wie viel", "kosten", "rechnung offen",
    ),
    "new_link": (
        "link", "new link", "another link", "send link", "neuer link", "neuen link",
        "expired link", "abgelaufen",
    ),
    "receipt": (
        "receipt", "invoice", "bill", "quittung", "rechnung", "beleg", "zahlungsbeleg",
    ),
    "change_plan": (
        "plan", "pause", "downgrade", "upgrade", "cheaper", "tarif", "pausieren",
        "guenstiger", "wechseln", "abo aendern", "mitgliedschaft aendern",
    ),
    "privacy": (
        "privacy", "data", "gdpr", "personal data", "delete my data", "datenschutz",
        "daten", "dsgvo", "loeschen", "personenbezogen",
    ),
    "help": ("help", "hilfe", "commands", "befehle", "what can you do", "was kannst du"),
    "thanks": ("thanks", "thank you", "danke", "vielen dank", "merci"),
}

# Words that make the member's wish for a human, or a complex case, plain. Each maps to the
# handoff reason it stands for (see payrescue.handoff_rules).
TRIGGERS: dict[str, tuple[str, ...]] = {
    "asked_for_human": (
        "human", "agent", "person", "real person", "someone real", "somebody", "operator",
        "support", "mensch", "menschen", "mitarbeiter", "mitarbeiterin", "jemand echtes",
        "echte person", "echten menschen", "berater", "kundenservice",
    ),
    "dispute": ("dispute", "chargeback", "charge back", "rueckbuchung", "widerspruch",
                "lastschrift zurueck", "zurueckbuchen", "reklamation"),
    "refund": ("refund", "money back", "reimburse", "erstattung", "rueckerstattung",
               "geld zurueck", "erstatten"),
    "cancellation": ("cancel", "cancellation", "unsubscribe", "quit", "terminate",
                     "kuendigen", "kuendigung", "beenden", "austreten", "abmelden"),
    "fraud": ("fraud", "stolen", "lost card", "scam", "hacked", "not me", "betrug",
              "gestohlen", "verloren", "karte verloren", "gehackt", "missbrauch"),
    "distress": ("angry", "furious", "ridiculous", "scandal", "unacceptable", "lawyer",
                 "desperate", "wtf", "sauer", "wuetend", "frechheit", "unverschaemt",
                 "skandal", "anwalt", "verzweifelt", "unmoeglich", "abzocke", "betrueger"),
}


def normalise(text: str) -> str:
    """Lower case, umlauts spelled out, other accents dropped: "Öffnen" → "oeffnen"."""
    text = text.lower()
    for umlaut, spelled in (("ä", "ae"), ("ö", "oe"), ("ü", "ue"), ("ß", "ss")):
        text = text.replace(umlaut, spelled)
    decomposed = unicodedata.normalize("NFKD", text)
    return "".join(c for c in decomposed if not unicodedata.combining(c))


def words(text: str) -> list[str]:
    return WORD.findall(normalise(text))


def _word_matches(cue: str, word: str) -> bool:
    if cue == word:
        return True
    if len(cue) < MIN_FUZZY_LENGTH or len(word) < MIN_FUZZY_LENGTH - 1:
        return False
    return fuzz.ratio(cue, word) >= FUZZY_SCORE


@cache
def _cue_words(cue: str) -> tuple[str, ...]:
    return tuple(words(cue))


def _cue_score(cue: str, text_words: list[str]) -> float:
    """1 per word of the cue, if every word of it appears (typos allowed); else 0."""
    parts = _cue_words(cue)
    if all(any(_word_matches(part, word) for word in text_words) for part in parts):
        return float(len(parts))
    return 0.0


@dataclass(frozen=True)
class Match:
    name: str
    score: float


def _best(table: dict[str, tuple[str, ...]], text: str) -> list[Match]:
    text_words = words(text)
    found = []
    for name, cues in table.items():
        score = sum(_cue_score(cue, text_words) for cue in cues)
        if score:
            found.append(Match(name, score))
    return sorted(found, key=lambda m: -m.score)


def intent(text: str) -> str | None:
    """The question the member most likely asks, or None when we do not understand."""
    found = _best(INTENTS, text)
    return found[0].name if found else None


def triggers(text: str) -> list[str]:
    """Every handoff reason the text speaks of (may be several: "refund, I'm furious")."""
    return [match.name for match in _best(TRIGGERS, text)]
