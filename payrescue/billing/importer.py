"""`payrescue members import FILE.csv`: members from a spreadsheet, safe to run again.

Columns (header row, any order, comma or semicolon): email (required), name, language (de,
en), time_zone (IANA, e.g. Europe/Vienna), stripe_customer_id, memberpress_member_id,
external_id. A member is found by e-mail and updated, else created; a row that cannot be
used goes to FILE.rejected.csv with its reason, and everything else is still imported. A
row whose e-mail is no address at all is imported all the same — the member is kept and
marked not reachable by e-mail (`Member.email_problem`) — and reported in that file too.
Payment events that arrived for a member's ids before the member existed (parked, see
`billing.history`) join them on import, and their cases are derived then.
"""

from __future__ import annotations

import csv
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from payrescue.billing.ingest import apply_parked
from payrescue.billing.members import email_problem_of
from payrescue.db import lock_for_writing
from payrescue.db.models import Member
from payrescue.i18n import normalise

COLUMNS = ("email", "name", "language", "time_zone", "stripe_customer_id",
           "memberpress_member_id", "external_id")
ID_COLUMNS = ("stripe_customer_id", "memberpress_member_id", "external_id")
_LIMITS = {"email": 320, "name": 200, "stripe_customer_id": 100, "memberpress_member_id": 100,
           "external_id": 200}
BATCH = 500  # rows per transaction: a crash loses at most one batch, a re-run redoes it


UNREACHABLE = "email: not an e-mail address; the member is kept, not reachable by e-mail"


class ImportError_(Exception):  # noqa: N801 - "ImportError" is Python's own
    """The file as a whole cannot be read; one line for the operator."""


@dataclass
class Summary:
    total: int = 0
    created: int = 0
    updated: int = 0
    unchanged: int = 0
    rejected: list[tuple[dict[str, str], str]] = field(default_factory=list)
    # imported, but the e-mail is no address: the member is not reachable by e-mail
    unreachable: list[tuple[dict[str, str], str]] = field(default_factory=list)
    rejected_file: Path | None = None  # both lists, with their reasons


class RowRejected(ValueError):
    pass


def read_rows(path: Path) -> list[dict[str, str]]:
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise ImportError_(f"{path}: cannot read ({exc.__class__.__name__})") from None
    first_line = text.split("\n", 1)[0]
    delimiter = ";" if first_line.count(";") > first_line.count(",") else ","
    reader = csv.DictReader(text.splitlines(), delimiter=delimiter)
    header = [(name or "").strip().lower() for name in (reader.fieldnames or [])]
    if "email" not in header:
        raise ImportError_(f"{path}: the header row needs an 'email' column "
                           f"(columns: {', '.join(COLUMNS)})")
    reader.fieldnames = header
    return [{k: (v or "").strip() for k, v in row.items() if k in COLUMNS}
            for row in reader]


def clean(row: dict[str, str]) -> dict[str, str | None]:
    """The row's values as stored, or RowRejected naming the first problem."""
    email = row.get("email", "").lower()
    if not email:
        raise RowRejected("email: missing")
    values: dict[str, str | None] = {"email": email, "email_problem": email_problem_of(email)}
    for column, limit in _LIMITS.items():
        if column != "email":
            values[column] = row.get(column) or None
        if values.get(column) and len(values[column] or "") > limit:
            raise RowRejected(f"{column}: longer than {limit} characters")
    language = row.get("language") or ""
    values["language"] = normalise(language) if language else None
    if language and values["language"] is None:
        raise RowRejected(f"language: {language!r} is not de or en")
    zone = row.get("time_zone") or ""
    if zone:
        try:
            ZoneInfo(zone)
        except (ZoneInfoNotFoundError, ValueError):
            raise RowRejected(f"time_zone: {zone!r} is not an IANA zone such as "
                              "Europe/Berlin") from None
    values["time_zone"] = zone or None
    return values


async def _apply(session: AsyncSession, values: dict[str, str | None], now: datetime) -> str:
    member = await session.scalar(select(Member).where(Member.email == values["email"]))
    for column in ID_COLUMNS:
        value = values.get(column)
        if value:
            holder = await session.scalar(select(Member.id).where(
                getattr(Member, column) == value))
            if holder is not None and (member is None or holder != member.id):
                raise RowRejected(f"{column}: {value} belongs to another member")
    if member is None:
        session.add(Member(**{k: v for k, v in values.items() if v is not None},
                           created_at=now, member_since=now))
        return "created"
    changed = False
    for column, value in values.items():
        if value is not None and getattr(member, column) != value:
            setattr(member, column, value)  # an empty cell keeps what we have
            changed = True
    return "updated" if changed else "unchanged"


async def import_members(sessionmaker: async_sessionmaker[AsyncSession], path: Path,
                         now: datetime,
                         progress: Callable[[int, int], None] | None = None) -> Summary:
    rows = read_rows(path)
    summary = Summary(total=len(rows))
    for start in range(0, len(rows), BATCH):
        async with sessionmaker() as session, session.begin():
            await lock_for_writing(session)  # the service may be writing meanwhile
            for row in rows[start:start + BATCH]:
                await _import_row(session, row, now, summary)
        if progress:
            progress(min(start + BATCH, len(rows)), len(rows))
    if summary.rejected or summary.unreachable:
        summary.rejected_file = write_rejected(path, summary.rejected + summary.unreachable)
    return summary


async def _import_row(session: AsyncSession, row: dict[str, str], now: datetime,
                      summary: Summary) -> None:
    try:
        values = clean(row)
        async with session.begin_nested():
            result = await _apply(session, values, now)
            await session.flush()
    except RowRejected as exc:
        summary.rejected.append((row, str(exc)))
        return
    except IntegrityError:
        summary.rejected.append((row, "conflicts with another member's e-mail or id"))
        return
    setattr(summary, result, getattr(summary, result) + 1)
    if values["email_problem"] is not None:
        summary.unreachable.append((row, UNREACHABLE))
    if result != "unchanged":  # events parked for this member's ids now apply
        member = await session.scalar(select(Member).where(Member.email == values["email"]))
        if member is not None:
            await apply_parked(session, member, now)


def write_rejected(path: Path, rejected: list[tuple[dict[str, str], str]]) -> Path:
    target = path.with_name(f"{path.stem}.rejected.csv")
    with target.open("w", newline="", encoding="utf-8") as out:
        writer = csv.DictWriter(out, fieldnames=[*COLUMNS, "reason"], extrasaction="ignore")
        writer.writeheader()
        for row, reason in rejected:
            writer.writerow({**row, "reason": reason})
    return target


def progress_bar(stream, doing: str = "importing") -> Callable[[int, int], None]:  # noqa: ANN001
    """A plain one-line bar on a terminal; whole lines when stderr is a file or pipe."""
    def show(done: int, total: int) -> None:
        share = done / total if total else 1
        bar = "#" * int(share * 30)
        line = f"{doing} [{bar:<30}] {done}/{total} ({share:.0%})"
        if stream.isatty():
            stream.write("\r" + line + ("\n" if done >= total else ""))
        else:
            stream.write(line + "\n")
        stream.flush()

    return show
