"""Full-text search over timeline text, one function for both databases.

PostgreSQL: a GIN index over the German and the English vector of `messages.text`
(members write either language; each configuration stems and drops stop words its own
way), queried with the same expression. SQLite: an FTS5 table (`messages_fts`) whose
content is `messages`, kept current by triggers.

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
FTS_TABLE = "messages_fts"
PG_VECTOR = ("(to_tsvector('german', coalesce(text, '')) || "
             "to_tsvector('english', coalesce(text, '')))")
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
        connection.execute(text(f"CREATE INDEX {PG_INDEX} ON messages USING gin ({PG_VECTOR})"))
        return
    for statement in _SQLITE_DDL:
        connection.execute(text(statement))


def drop_search_index(connection: Connection) -> None:
    if connection.dialect.name == "postgresql":
        connection.execute(text(f"DROP INDEX IF EXISTS {PG_INDEX}"))
        return
    for trigger in ("insert", "delete", "update"):
        connection.execute(text(f"DROP TRIGGER IF EXISTS messages_fts_{trigger}"))
    connection.execute(text(f"DROP TABLE IF EXISTS {FTS_TABLE}"))


def include_object(obj: Any, name: str | None, type_: str, reflected: bool,
                   compare_to: Any) -> bool:
    """For Alembic's comparison: the search index lives outside the models."""
    return not (name or "").startswith((PG_INDEX, FTS_TABLE))


async def matching_message_ids(session: AsyncSession, query: str, limit: int) -> list[int]:
    """Ids of the messages whose text matches every word of `query`, newest first."""
    words = _WORD.findall(query)[:10]
    if not words:
        return []
    if session.bind.dialect.name == "postgresql":
        phrase = " ".join(words)
        # the matches first, through the GIN index, then the newest of them: asked for
        # "newest first" directly, the planner walks the primary key backwards and computes
        # both vectors of every line until it has enough (seconds for a rare word)
        rows = await session.execute(text(
            f"WITH found AS MATERIALIZED (SELECT id FROM messages WHERE {PG_VECTOR} @@ "
            "(plainto_tsquery('german', :q) || plainto_tsquery('english', :q))) "
            "SELECT id FROM found ORDER BY id DESC LIMIT :limit"),
            {"q": phrase, "limit": limit})
    else:
        # each word quoted (no FTS5 syntax from the agent), matching as a prefix
        match = " ".join('"' + word.replace('"', '""') + '"*' for word in words)
        rows = await session.execute(text(
            f"SELECT rowid FROM {FTS_TABLE} WHERE {FTS_TABLE} MATCH :q "
            "ORDER BY rowid DESC LIMIT :limit"), {"q": match, "limit": limit})
    return [row[0] for row in rows]
