"""Recovery figures: the one place that computes them, for the dashboard, the CSV and the CLI.

A `Period` is a run of whole days in the business's time zone. Counting rules, so that a
figure means the same everywhere:

- *opened*, *amount at risk*, *recovery rate*, *by decline category* and *by language* look at
  the cases **opened** in the period (a cohort) and how many of them are recovered so far;
- *recovered* (count, amount, attribution, time to recovery, MRR saved) counts cases
  **recovered** in the period, *lost* cases **lost** in it — money that came back or went
  away in those days, whenever the failure happened;
- update links count the links **created** in the period; conversation figures the handoffs
  **requested** in it; CSAT the ratings of conversations **resolved** in it.

Everything is plain SQL that SQLite and PostgreSQL run alike; time zones, medians and
percentiles are done in Python over narrow column fetches, so both databases agree.
"""

from __future__ import annotations

import math
import re
import statistics
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import (
    ColumnElement,
    and_,
    case,
    exists,
    func,
    literal_column,
    or_,
    select,
)
from sqlalchemy.ext.asyncio import AsyncSession

from payrescue.db.models import (
    Agent,
    Conversation,
    Handoff,
    Member,
    RecoveryCase,
    Subscription,
    TelegramLink,
    UpdateLink,
)
from payrescue.hours import BusinessHours
from payrescue.i18n import normalise

ATTRIBUTIONS = ("no_contact", "bot", "agent")
RATINGS = (1, 2, 3, 4, 5)
MAX_PERIOD_DAYS = 366 * 3
DAILY_BUCKETS_UP_TO_DAYS = 31  # longer periods chart the recovery rate per week


class PeriodError(ValueError):
    """A period the caller asked for cannot be read; the message says what was expected."""


@dataclass(frozen=True)
class Period:
    """Whole local days `first` … `last` (both included) in `zone`."""

    first: date
    last: date
    zone: ZoneInfo

    def __post_init__(self) -> None:
        if self.last < self.first:
            raise PeriodError("the end date lies before the start date")
        if (self.last - self.first).days >= MAX_PERIOD_DAYS:
            raise PeriodError(f"a period spans at most {MAX_PERIOD_DAYS} days")

    @classmethod
    def last_days(cls, days: int, now: datetime, zone: ZoneInfo) -> Period:
        """The last `days` days up to and including today (local)."""
        if days < 1:
            raise PeriodError("the number of days must be at least 1")
        today = now.astimezone(zone).date()
        return cls(today - timedelta(days=days - 1), today, zone)

    @classmethod
    def parse(cls, since: str, until: str | None, now: datetime, zone: ZoneInfo) -> Period:
        """`since` is `30d` or a date `2026-01-31`; `until` (optional) a date, default today."""
        today = now.astimezone(zone).date()
        last = _parse_date(until, "until") if until else today
        match = re.fullmatch(r"\s*(\d{1,4})\s*d\s*", since or "")
        if match:
            first = last - timedelta(days=int(match[1]) - 1)
            if int(match[1]) < 1:
                raise PeriodError("the number of days must be at least 1")
        else:
            first = _parse_date(since, "since")
        return cls(first, last, zone)

    @property
    def start(self) -> datetime:
        """The first moment of the period, aware UTC (local midnight, DST-correct)."""
        return _local_midnight(self.first, self.zone)

    @property
    def end(self) -> datetime:
        """The first moment after the period, aware UTC."""
        return _local_midnight(self.last + timedelta(days=1), self.zone)

    @property
    def days(self) -> int:
        return (self.last - self.first).days + 1


def _parse_date(text: str, name: str) -> date:
    try:
        return date.fromisoformat(text.strip())
    except ValueError:
        raise PeriodError(
            f"{name}: expected a number of days such as 30d or a date such as 2026-01-31, "
            f"got {text!r}"
        ) from None


def _local_midnight(day: date, zone: ZoneInfo) -> datetime:
    return datetime.combine(day, time(0), zone).astimezone(UTC)


@dataclass(frozen=True)
class Group:
    """Cases opened in the period that share one trait (decline category or language)."""

    key: str
    opened: int
    recovered: int

    @property
    def rate(self) -> float | None:
        return self.recovered / self.opened if self.opened else None


@dataclass(frozen=True)
class AgentLoad:
    agent_id: int
    name: str
    conversations: int


@dataclass(frozen=True)
class RateBucket:
    """Cases opened from `first` (a local day) until the next bucket, and their outcome."""

    first: date
    opened: int
    recovered: int

    @property
    def rate(self) -> float | None:
        return self.recovered / self.opened if self.opened else None


@dataclass(frozen=True)
class WeekAmounts:
    first: date  # the Monday the week starts on (the first week may start later)
    recovered: int
    lost: int


@dataclass
class Figures:
    period: Period
    currencies: list[str]  # by amount at risk, largest first
    opened: int = 0
    at_risk: dict[str, int] = field(default_factory=dict)
    cohort_recovered: int = 0
    recovered: int = 0
    recovered_amount: dict[str, int] = field(default_factory=dict)
    lost: int = 0
    lost_amount: dict[str, int] = field(default_factory=dict)
    attribution: dict[str, int] = field(default_factory=dict)
    recovery_seconds_median: float | None = None
    recovery_seconds_p90: float | None = None
    by_category: list[Group] = field(default_factory=list)
    links_sent: int = 0
    links_opened: int = 0
    recovered_after_open: int = 0
    handoffs: int = 0
    handoff_reasons: dict[str, int] = field(default_factory=dict)
    first_response_median: float | None = None  # business seconds
    resolution_median: float | None = None  # business seconds
    csat_count: int = 0
    csat_average: float | None = None
    csat_distribution: dict[int, int] = field(default_factory=dict)
    per_agent: list[AgentLoad] = field(default_factory=list)
    churned: int = 0
    active_at_start: int = 0
    mrr_saved: dict[str, int] = field(default_factory=dict)
    by_language: list[Group] = field(default_factory=list)
    rate_series: list[RateBucket] = field(default_factory=list)
    weekly_amounts: list[WeekAmounts] = field(default_factory=list)
    chart_currency: str | None = None  # the currency `weekly_amounts` is in

    @property
    def recovery_rate(self) -> float | None:
        return self.cohort_recovered / self.opened if self.opened else None

    @property
    def share_after_open(self) -> float | None:
        return self.recovered_after_open / self.recovered if self.recovered else None

    @property
    def churn_rate(self) -> float | None:
        return self.churned / self.active_at_start if self.active_at_start else None

    @property
    def empty(self) -> bool:
        """Nothing happened in the period: the page shows zeros and a friendly note."""
        return not (self.opened or self.recovered or self.lost or self.handoffs
                    or self.links_sent or self.csat_count)


async def compute(
    session: AsyncSession, period: Period, hours: BusinessHours, default_language: str
) -> Figures:
    """Every figure for `period`; `hours` makes response times count business time only."""
    start, end = period.start, period.end
    figures = Figures(period=period, currencies=[])
    await _cases_opened(session, figures, start, end)
    await _cases_recovered(session, figures, start, end)
    await _cases_lost(session, figures, start, end)
    await _update_links(session, figures, start, end)
    await _handoffs(session, figures, start, end, hours)
    await _ratings(session, figures, start, end)
    await _per_agent(session, figures, start, end)
    await _churn(session, figures, start, end)
    await _by_language(session, figures, start, end, default_language)
    await _rate_series(session, figures, period)
    await _weekly_amounts(session, figures, period)
    return figures


def _within(column: Any, start: datetime, end: datetime) -> ColumnElement[bool]:
    return and_(column >= start, column < end)


def _sums(rows: Iterable[Sequence[Any]]) -> dict[str, int]:
    """(currency, amount) rows → {currency: amount}; PostgreSQL sums come back as Decimal."""
    return {currency: int(amount or 0) for currency, amount in rows if currency}


# Inline constants: a bound parameter in CASE … THEN has no type on PostgreSQL.
_ONE, _ZERO = literal_column("1"), literal_column("0")
_ONE_IF_RECOVERED = case((RecoveryCase.status == "recovered", _ONE), else_=_ZERO)
_RECOVERED_AMOUNT = func.coalesce(RecoveryCase.recovered_amount_minor, RecoveryCase.amount_minor)


async def _cases_opened(session: AsyncSession, figures: Figures, start: datetime,
                        end: datetime) -> None:
    opened = _within(RecoveryCase.opened_at, start, end)
    rows = (await session.execute(
        select(RecoveryCase.currency, func.sum(RecoveryCase.amount_minor))
        .where(opened).group_by(RecoveryCase.currency)
    )).all()
    figures.at_risk = _sums(rows)
    figures.currencies = sorted(figures.at_risk, key=lambda c: (-figures.at_risk[c], c))
    groups = (await session.execute(
        select(RecoveryCase.decline_category, func.count(), func.sum(_ONE_IF_RECOVERED))
        .where(opened).group_by(RecoveryCase.decline_category)
    )).all()
    figures.by_category = sorted(
        (Group(category or "unknown", int(n), int(r or 0)) for category, n, r in groups),
        key=lambda g: (-g.opened, g.key),
    )
    figures.opened = sum(g.opened for g in figures.by_category)
    figures.cohort_recovered = sum(g.recovered for g in figures.by_category)


async def _cases_recovered(session: AsyncSession, figures: Figures, start: datetime,
                           end: datetime) -> None:
    recovered = and_(RecoveryCase.status == "recovered",
                     _within(RecoveryCase.recovered_at, start, end))
    rows = (await session.execute(
        select(RecoveryCase.currency, func.sum(_RECOVERED_AMOUNT))
        .where(recovered).group_by(RecoveryCase.currency)
    )).all()
    figures.recovered_amount = _sums(rows)
    by_attribution = (await session.execute(
        select(RecoveryCase.attribution, func.count()).where(recovered)
        .group_by(RecoveryCase.attribution)
    )).all()
    figures.attribution = {a: 0 for a in ATTRIBUTIONS}
    for attribution, count in by_attribution:
        key = attribution or "unknown"
        figures.attribution[key] = figures.attribution.get(key, 0) + int(count)
    figures.recovered = sum(figures.attribution.values())
    opened_before = (
        select(_ONE).where(
            UpdateLink.case_id == RecoveryCase.id,
            UpdateLink.first_opened_at.is_not(None),
            UpdateLink.first_opened_at <= RecoveryCase.recovered_at,
        )
    )
    figures.recovered_after_open = int(await session.scalar(
        select(func.count()).select_from(RecoveryCase).where(recovered, exists(opened_before))
    ) or 0)
    spans = (await session.execute(
        select(RecoveryCase.opened_at, RecoveryCase.recovered_at).where(recovered)
    )).all()
    durations = sorted((done - began).total_seconds() for began, done in spans)
    figures.recovery_seconds_median = median(durations)
    figures.recovery_seconds_p90 = percentile(durations, 90)
    await _mrr_saved(session, figures, recovered)


async def _mrr_saved(session: AsyncSession, figures: Figures,
                     recovered: ColumnElement[bool]) -> None:
    """Recurring revenue kept: each recovered subscription's amount once (monthly billing)."""
    rows = (await session.execute(
        select(
            RecoveryCase.id, RecoveryCase.subscription_id,
            func.coalesce(Subscription.currency, RecoveryCase.currency),
            func.coalesce(Subscription.amount_minor, RecoveryCase.amount_minor),
        ).outerjoin(Subscription, Subscription.id == RecoveryCase.subscription_id)
        .where(recovered)
    )).all()
    seen: dict[tuple[str, int], tuple[str, int]] = {}
    for case_id, subscription_id, currency, amount in rows:
        key = ("subscription", subscription_id) if subscription_id else ("case", case_id)
        seen[key] = (currency, int(amount or 0))
    saved: dict[str, int] = defaultdict(int)
    for currency, amount in seen.values():
        saved[currency] += amount
    figures.mrr_saved = dict(saved)


async def _cases_lost(session: AsyncSession, figures: Figures, start: datetime,
                      end: datetime) -> None:
    lost = and_(RecoveryCase.status == "lost", _within(RecoveryCase.lost_at, start, end))
    rows = (await session.execute(
        select(RecoveryCase.currency, func.count(), func.sum(RecoveryCase.amount_minor))
        .where(lost).group_by(RecoveryCase.currency)
    )).all()
    figures.lost = sum(int(n) for _c, n, _a in rows)
    figures.lost_amount = _sums((c, a) for c, _n, a in rows)


async def _update_links(session: AsyncSession, figures: Figures, start: datetime,
                        end: datetime) -> None:
    opened = case((UpdateLink.first_opened_at.is_not(None), _ONE), else_=_ZERO)
    sent, opened_count = (await session.execute(
        select(func.count(), func.sum(opened)).where(_within(UpdateLink.created_at, start, end))
    )).one()
    figures.links_sent, figures.links_opened = int(sent), int(opened_count or 0)


async def _handoffs(session: AsyncSession, figures: Figures, start: datetime, end: datetime,
                    hours: BusinessHours) -> None:
    rows = (await session.execute(
        select(Handoff.reasons, Handoff.requested_at, Handoff.first_response_at,
               Handoff.ended_at).where(_within(Handoff.requested_at, start, end))
    )).all()
    figures.handoffs = len(rows)
    reasons: Counter[str] = Counter()
    first_responses, resolutions = [], []
    for listed, requested, responded, ended in rows:
        reasons.update(set(listed or []) or {"unknown"})
        if responded is not None:
            first_responses.append(hours.open_seconds_between(requested, responded))
        if ended is not None:
            resolutions.append(hours.open_seconds_between(requested, ended))
    figures.handoff_reasons = dict(sorted(reasons.items(), key=lambda kv: (-kv[1], kv[0])))
    figures.first_response_median = median(sorted(first_responses))
    figures.resolution_median = median(sorted(resolutions))


async def _ratings(session: AsyncSession, figures: Figures, start: datetime,
                   end: datetime) -> None:
    rows = (await session.execute(
        select(Conversation.rating, func.count())
        .where(Conversation.rating.is_not(None),
               _within(Conversation.resolved_at, start, end))
        .group_by(Conversation.rating)
    )).all()
    figures.csat_distribution = {stars: 0 for stars in RATINGS}
    for stars, count in rows:
        if stars in figures.csat_distribution:
            figures.csat_distribution[stars] = int(count)
    figures.csat_count = sum(figures.csat_distribution.values())
    if figures.csat_count:
        total = sum(stars * n for stars, n in figures.csat_distribution.items())
        figures.csat_average = total / figures.csat_count


async def _per_agent(session: AsyncSession, figures: Figures, start: datetime,
                     end: datetime) -> None:
    rows = (await session.execute(
        select(Agent.id, Agent.name, func.count(func.distinct(Handoff.conversation_id)))
        .join(Handoff, Handoff.agent_id == Agent.id)
        .where(_within(Handoff.requested_at, start, end))
        .group_by(Agent.id, Agent.name)
    )).all()
    figures.per_agent = sorted(
        (AgentLoad(int(i), name, int(n)) for i, name, n in rows),
        key=lambda a: (-a.conversations, a.name, a.agent_id),
    )


async def _churn(session: AsyncSession, figures: Figures, start: datetime,
                 end: datetime) -> None:
    """Subscriptions lost to a failed payment ÷ subscriptions active when the period began."""
    began = func.coalesce(Subscription.started_at, Subscription.created_at)
    figures.active_at_start = int(await session.scalar(
        select(func.count()).select_from(Subscription).where(
            began < start, or_(Subscription.ended_at.is_(None), Subscription.ended_at >= start)
        )
    ) or 0)
    lost = (await session.execute(
        select(RecoveryCase.id, RecoveryCase.subscription_id).where(
            RecoveryCase.status == "lost", _within(RecoveryCase.lost_at, start, end)
        )
    )).all()
    figures.churned = len({("s", sub) if sub else ("c", case_id) for case_id, sub in lost})


async def _by_language(session: AsyncSession, figures: Figures, start: datetime,
                       end: datetime, default_language: str) -> None:
    spoken = func.coalesce(Member.language, TelegramLink.language_code)
    rows = (await session.execute(
        select(spoken, func.count(), func.sum(_ONE_IF_RECOVERED))
        .select_from(RecoveryCase)
        .join(Member, Member.id == RecoveryCase.member_id)
        .outerjoin(TelegramLink, TelegramLink.member_id == Member.id)
        .where(_within(RecoveryCase.opened_at, start, end))
        .group_by(spoken)
    )).all()
    totals: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for code, opened, recovered in rows:
        language = normalise(code) or default_language
        totals[language][0] += int(opened)
        totals[language][1] += int(recovered or 0)
    figures.by_language = [Group(lang, n, r) for lang, (n, r) in sorted(totals.items())]


def _bucket_index(column: Any, edges: Sequence[datetime]) -> ColumnElement[int]:
    """Which bucket a moment falls in: a CASE over UTC edges, so no SQL time zone maths."""
    return case(
        *((column < edge, literal_column(str(index))) for index, edge in enumerate(edges[1:])),
        else_=literal_column(str(len(edges) - 2)),
    ).label("bucket")


def _day_starts(period: Period, weekly: bool) -> list[date]:
    days = [period.first]
    if weekly:
        monday = period.first - timedelta(days=period.first.weekday()) + timedelta(days=7)
        days += [monday + timedelta(weeks=k) for k in range(0, period.days // 7 + 2)]
    else:
        days += [period.first + timedelta(days=k) for k in range(1, period.days + 1)]
    return [d for d in days if d <= period.last] + [period.last + timedelta(days=1)]


async def _rate_series(session: AsyncSession, figures: Figures, period: Period) -> None:
    weekly = period.days > DAILY_BUCKETS_UP_TO_DAYS
    firsts = _day_starts(period, weekly)
    edges = [_local_midnight(d, period.zone) for d in firsts]
    bucket = _bucket_index(RecoveryCase.opened_at, edges)
    rows = (await session.execute(
        select(bucket, func.count(), func.sum(_ONE_IF_RECOVERED))
        .where(_within(RecoveryCase.opened_at, period.start, period.end)).group_by(bucket)
    )).all()
    counts = {int(i): (int(n), int(r or 0)) for i, n, r in rows}
    figures.rate_series = [
        RateBucket(first, *counts.get(i, (0, 0))) for i, first in enumerate(firsts[:-1])
    ]


async def _weekly_amounts(session: AsyncSession, figures: Figures, period: Period) -> None:
    """Recovered and lost amount per week in the period's main currency."""
    amounts = figures.recovered_amount.keys() | figures.lost_amount.keys()
    currency = next((c for c in figures.currencies if c in amounts), None) or min(
        amounts, default=None)
    figures.chart_currency = currency
    firsts = _day_starts(period, weekly=True)
    if currency is None:
        figures.weekly_amounts = [WeekAmounts(first, 0, 0) for first in firsts[:-1]]
        return
    edges = [_local_midnight(d, period.zone) for d in firsts]
    totals: dict[int, list[int]] = defaultdict(lambda: [0, 0])
    for slot, status, moment, amount in (
        (0, "recovered", RecoveryCase.recovered_at, _RECOVERED_AMOUNT),
        (1, "lost", RecoveryCase.lost_at, RecoveryCase.amount_minor),
    ):
        bucket = _bucket_index(moment, edges)
        rows = (await session.execute(
            select(bucket, func.sum(amount)).where(
                RecoveryCase.status == status, RecoveryCase.currency == currency,
                _within(moment, period.start, period.end),
            ).group_by(bucket)
        )).all()
        for index, total in rows:
            totals[int(index)][slot] = int(total or 0)
    figures.weekly_amounts = [
        WeekAmounts(first, *totals.get(i, (0, 0))) for i, first in enumerate(firsts[:-1])
    ]


def median(ordered: Sequence[float]) -> float | None:
    """The middle value (the mean of the two middle ones for an even count); None if empty."""
    return statistics.median(ordered) if ordered else None


def percentile(ordered: Sequence[float], pct: int) -> float | None:
    """Nearest-rank percentile: the smallest value with at least `pct` % at or below it."""
    if not ordered:
        return None
    rank = max(1, math.ceil(pct / 100 * len(ordered)))
    return ordered[rank - 1]


@dataclass(frozen=True)
class CaseFilter:
    """Filters for the cases list; None means any."""

    status: str | None = None
    decline_category: str | None = None
    currency: str | None = None
    attribution: str | None = None


@dataclass(frozen=True)
class CaseRow:
    case_id: int
    member_id: int
    provider: str
    status: str
    decline_category: str
    amount_minor: int
    currency: str
    opened_at: datetime
    recovered_at: datetime | None
    recovered_amount_minor: int | None
    attribution: str | None
    lost_at: datetime | None


async def list_cases(session: AsyncSession, period: Period, filters: CaseFilter,
                     limit: int | None = None) -> list[CaseRow]:
    """The cases opened in the period (newest first), with ids only — no personal data."""
    query = select(
        RecoveryCase.id, RecoveryCase.member_id, RecoveryCase.provider, RecoveryCase.status,
        RecoveryCase.decline_category, RecoveryCase.amount_minor, RecoveryCase.currency,
        RecoveryCase.opened_at, RecoveryCase.recovered_at, RecoveryCase.recovered_amount_minor,
        RecoveryCase.attribution, RecoveryCase.lost_at,
    ).where(_within(RecoveryCase.opened_at, period.start, period.end))
    wanted = {
        RecoveryCase.status: filters.status,
        RecoveryCase.decline_category: filters.decline_category,
        RecoveryCase.currency: filters.currency and filters.currency.upper(),
        RecoveryCase.attribution: filters.attribution,
    }
    for column, value in wanted.items():
        if value:
            query = query.where(column == value)
    query = query.order_by(RecoveryCase.opened_at.desc(), RecoveryCase.id.desc())
    if limit is not None:
        query = query.limit(limit)
    return [CaseRow(*row) for row in (await session.execute(query)).all()]
