"""Every user-visible string exists in German and in English."""

from __future__ import annotations

from pathlib import Path

import pytest
from babel.messages.extract import extract_from_dir
from babel.messages.frontend import parse_mapping_cfg
from babel.messages.pofile import read_po

from payrescue.i18n import LANGUAGES, locales_dir

ROOT = Path(__file__).resolve().parents[2]
KEYWORDS = {"_": None, "__": None, "gettext": None, "ngettext": (1, 2), "lazy_gettext": None}


def _source_messages() -> set[str]:
    """What `make catalogs` extracts: babel.cfg names the files (hidden folders skipped)."""
    with (ROOT / "babel.cfg").open() as cfg:
        method_map, options_map = parse_mapping_cfg(cfg)
    return {
        message[0] if isinstance(message, tuple) else message
        for _file, _line, message, _comments, _context in extract_from_dir(
            ROOT, method_map, options_map, keywords=KEYWORDS
        )
    }


SOURCE = _source_messages()


@pytest.mark.parametrize("language", LANGUAGES)
def test_every_message_is_translated(language: str) -> None:
    with (locales_dir() / language / "LC_MESSAGES" / "messages.po").open("rb") as po:
        catalog = read_po(po, locale=language)
    missing, untranslated, fuzzy = [], [], []
    for msgid in sorted(SOURCE):
        entry = catalog.get(msgid)
        if entry is None:
            missing.append(msgid)
            continue
        strings = entry.string if isinstance(entry.string, tuple) else (entry.string,)
        if not all(strings):
            untranslated.append(msgid)
        if entry.fuzzy:
            fuzzy.append(msgid)
    assert not missing, f"not in {language} catalog (run `make catalogs`): {missing[:5]}"
    assert not untranslated, f"untranslated in {language}: {untranslated[:5]}"
    assert not fuzzy, f"fuzzy in {language}: {fuzzy[:5]}"


def test_german_is_not_a_copy_of_english() -> None:
    """German texts are written, not left as the English source."""
    with (locales_dir() / "de" / "LC_MESSAGES" / "messages.po").open("rb") as po:
        catalog = read_po(po, locale="de")
    copied = [
        m.id for m in catalog
        if m.id and isinstance(m.id, str) and m.string == m.id and len(m.id.split()) > 2
    ]
    assert not copied, f"German entries identical to English: {copied[:5]}"
