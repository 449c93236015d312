"""Full-text search over timeline text, one function for both databases.

PostgreSQL: a stored generated column `search_vector` holding the German and the English
vector of `messages.text` (members write either language; each configuration stems and
drops stop words its own way) with a GIN index; searched newest first in widening windows
of ids, so a common word reads a few recent rows and a rare one the whole index. SQLite:
an FTS5 table (`messages_fts`) whose content is `messages`, kept current by triggers.

Alembic's autogenerate cannot describe either, so the migration that creates them calls
`create_search_index`, and `include_object` keeps them out of the model comparison.
SQLite's batch mode copies a table to alter it and loses its triggers: a migration that
batch-alters `messages` must call `drop_search_index` before and `create_search_index`
after.
"""

# ruff: noqa: S608 - only this module's constants are formatted into SQL; the agent's words
# are always bound parameters

from __future__ import annotations

import re
from typing import Any

from sqlalchemy import text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncSession

PG_INDEX = "ix_messages_text_search"
PG_COLUMN = "search_vector"
FTS_TABLE = "messages_fts"
PG_VECTOR = ("(to_tsvector('german', coalesce(text, '')) || "
             "to_tsvector('english', coalesce(text, '')))")
WINDOWS = (20_000, 400_000, None)  # the newest ids searched first; None: all of them
_SQLITE_DDL = [
    f"CREATE VIRTUAL TABLE {FTS_TABLE} USING fts5(text, content='messages', "
    "content_rowid='id', tokenize='unicode61 remove_diacritics 2')",
    f"CREATE TRIGGER messages_fts_insert AFTER INSERT ON messages BEGIN "
    f"INSERT INTO {FTS_TABLE}(rowid, text) VALUES (new.id, new.text); END",
    f"CREATE TRIGGER messages_fts_delete AFTER DELETE ON messages BEGIN "
    f"INSERT INTO {FTS_TABLE}({FTS_TABLE}, rowid, text) VALUES ('delete', old.id, old.text); "
    "END",
    f"CREATE TRIGGER messages_fts_update AFTER UPDATE OF text ON messages BEGIN "
    f"INSERT INTO {FTS_TABLE}({FTS_TABLE}, rowid, text) VALUES ('delete', old.id, old.text); "
    f"INSERT INTO {FTS_TABLE}(rowid, text) VALUES (new.id, new.text); END",
    f"INSERT INTO {FTS_TABLE}({FTS_TABLE}) VALUES ('rebuild')",
]
_WORD = re.compile(r"\w+", re.UNICODE)


def create_search_index(connection: Connection) -> None:
    if connection.dialect.name == "postgresql":
        connection.execute(text(f"ALTER TABLE messages ADD COLUMN {PG_COLUMN} tsvector "
                                f"GENERATED ALWAYS AS ({PG_VECTOR}) STORED"))
        connection.execute(text(f"CREATE INDEX {PG_INDEX} ON messages USING gin ({PG_COLUMN})"))
        return
    for statement in _SQLITE_DDL:
        connection.execute(text(statement))


def drop_search_index(connection: Connection) -> None:
    if connection.dialect.name == "postgresql":
        connection.execute(text(f"DROP INDEX IF EXISTS {PG_INDEX}"))
        connection.execute(text(f"ALTER TABLE messages DROP COLUMN IF EXISTS {PG_COLUMN}"))
        return
    for trigger in ("insert", "delete", "update"):
        connection.execute(text(f"DROP TRIGGER IF EXISTS messages_fts_{trigger}"))
    connection.execute(text(f"DROP TABLE IF EXISTS {FTS_TABLE}"))


def include_object(obj: Any, name: str | None, type_: str, reflected: bool,
                   compare_to: Any) -> bool:
    """For Alembic's comparison: the search index lives outside the models."""
    return not (name or "").startswith((PG_INDEX, PG_COLUMN, FTS_TABLE))


async def matching_message_ids(session: AsyncSession, query: str, limit: int) -> list[int]:
    """Ids of the messages whose text matches every word of `query`, newest first."""
    words = _WORD.findall(query)[:10]
    if not words:
        return []
    if session.bind.dialect.name == "postgresql":
        return await _postgres_ids(session, " ".join(words), limit)
    else:
        # each word quoted (no FTS5 syntax from the agent), matching as a prefix
        match = " ".join('"' + word.replace('"', '""') + '"*' for word in words)
        rows = await session.execute(text(
            f"SELECT rowid FROM {FTS_TABLE} WHERE {FTS_TABLE} MATCH :q "
            "ORDER BY rowid DESC LIMIT :limit"), {"q": match, "limit": limit})
    return [row[0] for row in rows]


async def _postgres_ids(session: AsyncSession, phrase: str, limit: int) -> list[int]:
    """The matches come from the GIN index (asked for "newest first" directly, the planner
    walks the primary key backwards through every line until it has enough: seconds for a
    rare word); the newest ids are searched first, so a common word stops early."""
    newest = await session.scalar(text("SELECT max(id) FROM messages")) or 0
    ids: list[int] = []
    for window in WINDOWS:
        since = newest - window if window is not None else 0
        rows = await session.execute(text(
            f"WITH found AS MATERIALIZED (SELECT id FROM messages WHERE {PG_COLUMN} @@ "
            "(plainto_tsquery('german', :q) || plainto_tsquery('english', :q)) "
            "AND id > :since) SELECT id FROM found ORDER BY id DESC LIMIT :limit"),
            {"q": phrase, "since": since, "limit": limit})
        ids = [row[0] for row in rows]
        if len(ids) >= limit or since <= 0:
            break
    return ids
