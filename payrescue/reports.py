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
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import (
    ColumnElement,
    Float,
    FunctionElement,
    and_,
    case,
    cast,
    exists,
    func,
    literal_column,
    or_,
    select,
)
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.ext.compiler import compiles

from payrescue.billing.signals import MONTHS_PER_INTERVAL
from payrescue.db.models import (
    Agent,
    Conversation,
    Handoff,
    Member,
    Outbox,
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
# far dates are typos, and the day after 9999-12-31 does not exist
EARLIEST_DAY, LATEST_DAY = date(1970, 1, 1), date(2199, 12, 31)
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
        if not (self.first >= EARLIEST_DAY and self.last <= LATEST_DAY):
            raise PeriodError(f"dates lie between {EARLIEST_DAY} and {LATEST_DAY}")
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
    rated: int = 0  # of the conversations the agent resolved in the period
    rating_average: float | None = None


@dataclass(frozen=True)
class RatingComment:
    """What a member wrote after rating a conversation resolved in the period."""

    conversation_id: int
    member_id: int
    stars: int
    comment: str
    agent_name: str | None
    resolved_at: datetime


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
class Reach:
    """How members are reached: Telegram first, e-mail as the fallback (payrescue.reach)."""

    members: int = 0  # not erased
    linked: int = 0  # linked to Telegram and not blocking the bot
    unreached: int = 0  # no channel left: neither Telegram nor a usable e-mail
    reached_by_channel: dict[str, int] = field(default_factory=dict)  # in the period
    emails_sent: int = 0
    emails_bounced: int = 0  # refused for good, or not an address
    email_links_opened: int = 0  # update links of cases first contacted by e-mail
    # first channel of a case opened in the period → (opened, recovered)
    by_first_channel: dict[str, tuple[int, int]] = field(default_factory=dict)

    @property
    def linked_share(self) -> float | None:
        return self.linked / self.members if self.members else None


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
    comments: list[RatingComment] = field(default_factory=list)  # the newest first
    churned: int = 0
    active_at_start: int = 0
    mrr_saved: dict[str, int] = field(default_factory=dict)
    by_language: list[Group] = field(default_factory=list)
    rate_series: list[RateBucket] = field(default_factory=list)
    weekly_amounts: list[WeekAmounts] = field(default_factory=list)
    chart_currency: str | None = None  # the currency `weekly_amounts` is in
    reach: Reach = field(default_factory=Reach)

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
    session: AsyncSession, period: Period, hours: BusinessHours, default_language: str,
    *, email_enabled: bool = False,
) -> Figures:
    """Every figure for `period`; `hours` makes response times count business time only;
    `email_enabled` says whether members without Telegram can be reached at all."""
    start, end = period.start, period.end
    figures = Figures(period=period, currencies=[])
    weeks = _day_starts(period, weekly=True)
    await _cases_opened(session, figures, period)
    recovered_weekly = await _cases_recovered(session, figures, period, weeks)
    await _recovery_times(session, figures, start, end)
    await _mrr_saved(session, figures, start, end)
    lost_weekly = await _cases_lost(session, figures, period, weeks)
    await _update_links(session, figures, start, end)
    await _handoffs(session, figures, start, end, hours)
    await _ratings(session, figures, start, end)
    await _per_agent(session, figures, start, end)
    await _active_at_start(session, figures, start)
    await _by_language(session, figures, start, end, default_language)
    _weekly_amounts(figures, weeks, recovered_weekly, lost_weekly)
    figures.reach = await _reach(session, start, end, email_enabled)
    return figures


async def _reach(session: AsyncSession, start: datetime, end: datetime,
                 email_enabled: bool) -> Reach:
    reach = Reach()
    alive = Member.erased_at.is_(None)
    linked = Member.id.in_(select(TelegramLink.member_id)) & Member.unreachable.is_(False)
    reach.members = await session.scalar(select(func.count()).where(alive)) or 0
    reach.linked = await session.scalar(select(func.count()).where(alive, linked)) or 0
    mailable = Member.email.is_not(None) & Member.email_problem.is_(None)
    unreached = ~linked if not email_enabled else ~linked & ~mailable
    reach.unreached = await session.scalar(select(func.count()).where(alive, unreached)) or 0
    rows = await session.execute(
        select(Outbox.channel, func.count(func.distinct(Outbox.member_id)))
        .where(Outbox.status == "sent", _within(Outbox.sent_at, start, end))
        .group_by(Outbox.channel))
    reach.reached_by_channel = {channel: int(count) for channel, count in rows}
    emails = Outbox.channel == "email"
    reach.emails_sent = await session.scalar(select(func.count()).where(
        emails, Outbox.status == "sent", _within(Outbox.sent_at, start, end))) or 0
    reach.emails_bounced = await session.scalar(select(func.count()).where(
        emails, Outbox.status == "failed", Outbox.error.like("address %"),
        _within(Outbox.created_at, start, end))) or 0
    # the channel of each case's first notice (dunning step 0: not a copy, not a re-send)
    first = (select(Outbox.case_id, func.min(Outbox.channel).label("channel"))
             .where(Outbox.dunning_step == 0, Outbox.dedupe_key.not_like("%:email"),
                    Outbox.dedupe_key.not_like("%:after-block"))
             .group_by(Outbox.case_id).subquery())
    reach.email_links_opened = await session.scalar(
        select(func.count()).select_from(UpdateLink)
        .join(first, first.c.case_id == UpdateLink.case_id)
        .where(first.c.channel == "email", UpdateLink.first_opened_at.is_not(None),
               _within(UpdateLink.created_at, start, end))) or 0
    recovered = case((RecoveryCase.status == "recovered", _ONE), else_=_ZERO)
    # a literal, not a parameter: PostgreSQL must see the same expression in GROUP BY
    channel = func.coalesce(first.c.channel, literal_column("'none'"))
    rows = await session.execute(
        select(channel, func.count(), func.sum(recovered))
        .select_from(RecoveryCase)
        .outerjoin(first, first.c.case_id == RecoveryCase.id)
        .where(_within(RecoveryCase.opened_at, start, end))
        .group_by(channel))
    reach.by_first_channel = {channel: (int(opened), int(won or 0))
                              for channel, opened, won in rows}
    return reach


def _within(column: Any, start: datetime, end: datetime) -> ColumnElement[bool]:
    return and_(column >= start, column < end)


# Inline constants: a bound parameter in CASE … THEN has no type on PostgreSQL.
_ONE, _ZERO = literal_column("1"), literal_column("0")
_ONE_IF_RECOVERED = case((RecoveryCase.status == "recovered", _ONE), else_=_ZERO)
_RECOVERED_AMOUNT = func.coalesce(RecoveryCase.recovered_amount_minor, RecoveryCase.amount_minor)
_RECOVERED_IN = RecoveryCase.status == "recovered"
_LOST_IN = RecoveryCase.status == "lost"

# {(week index, currency): amount}
WeeklyAmounts = dict[tuple[int, str], int]


def _bucket_index(column: Any, edges: Sequence[datetime]) -> ColumnElement[int]:
    """Which bucket a moment falls in: a CASE over UTC edges, so no SQL time zone maths."""
    return case(
        *((column < edge, literal_column(str(index))) for index, edge in enumerate(edges[1:])),
        else_=literal_column(str(len(edges) - 2)),
    ).label("bucket")


def _day_starts(period: Period, weekly: bool) -> list[date]:
    """The first local day of each bucket, then the day after the period (the last edge)."""
    days = [period.first]
    if weekly:
        monday = period.first - timedelta(days=period.first.weekday()) + timedelta(days=7)
        days += [monday + timedelta(weeks=k) for k in range(0, period.days // 7 + 2)]
    else:
        days += [period.first + timedelta(days=k) for k in range(1, period.days + 1)]
    return [d for d in days if d <= period.last] + [period.last + timedelta(days=1)]


def _edges(days: Sequence[date], zone: ZoneInfo) -> list[datetime]:
    return [_local_midnight(d, zone) for d in days]


async def _cases_opened(session: AsyncSession, figures: Figures, period: Period) -> None:
    """One pass over the cohort: at risk, by category, recovered so far and the rate series."""
    buckets = _day_starts(period, weekly=period.days > DAILY_BUCKETS_UP_TO_DAYS)
    bucket = _bucket_index(RecoveryCase.opened_at, _edges(buckets, period.zone))
    rows = (await session.execute(
        select(bucket, RecoveryCase.decline_category, RecoveryCase.currency, func.count(),
               func.sum(_ONE_IF_RECOVERED), func.sum(RecoveryCase.amount_minor))
        .where(_within(RecoveryCase.opened_at, period.start, period.end))
        .group_by(literal_column("bucket"), RecoveryCase.decline_category,
                  RecoveryCase.currency)
    )).all()
    at_risk: dict[str, int] = defaultdict(int)
    categories: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    series: dict[int, list[int]] = defaultdict(lambda: [0, 0])
    for index, category, currency, opened, recovered, amount in rows:
        at_risk[currency] += int(amount or 0)
        for totals in (categories[category or "unknown"], series[int(index)]):
            totals[0] += int(opened)
            totals[1] += int(recovered or 0)
    figures.at_risk = dict(at_risk)
    figures.currencies = sorted(at_risk, key=lambda c: (-at_risk[c], c))
    figures.by_category = sorted(
        (Group(key, opened, recovered) for key, (opened, recovered) in categories.items()),
        key=lambda g: (-g.opened, g.key),
    )
    figures.opened = sum(g.opened for g in figures.by_category)
    figures.cohort_recovered = sum(g.recovered for g in figures.by_category)
    figures.rate_series = [RateBucket(first, *series.get(i, (0, 0)))
                           for i, first in enumerate(buckets[:-1])]


async def _cases_recovered(session: AsyncSession, figures: Figures, period: Period,
                           weeks: Sequence[date]) -> WeeklyAmounts:
    """Count, amount, attribution, recovered after an opened link; amounts per week."""
    opened_before = select(_ONE).where(
        UpdateLink.case_id == RecoveryCase.id,
        UpdateLink.first_opened_at.is_not(None),
        UpdateLink.first_opened_at <= RecoveryCase.recovered_at,
    )
    after_open = case((exists(opened_before), _ONE), else_=_ZERO)
    week = _bucket_index(RecoveryCase.recovered_at, _edges(weeks, period.zone))
    rows = (await session.execute(
        select(week, RecoveryCase.currency, RecoveryCase.attribution, func.count(),
               func.sum(_RECOVERED_AMOUNT), func.sum(after_open))
        .where(_RECOVERED_IN, _within(RecoveryCase.recovered_at, period.start, period.end))
        .group_by(literal_column("bucket"), RecoveryCase.currency, RecoveryCase.attribution)
    )).all()
    figures.attribution = {a: 0 for a in ATTRIBUTIONS}
    amounts: dict[str, int] = defaultdict(int)
    weekly: WeeklyAmounts = defaultdict(int)
    for index, currency, attribution, count, amount, opened in rows:
        key = attribution or "unknown"
        figures.attribution[key] = figures.attribution.get(key, 0) + int(count)
        amounts[currency] += int(amount or 0)
        weekly[(int(index), currency)] += int(amount or 0)
        figures.recovered_after_open += int(opened or 0)
    figures.recovered = sum(figures.attribution.values())
    figures.recovered_amount = dict(amounts)
    return weekly


class _SecondsBetween(FunctionElement[float]):
    """`end - start` in seconds, written the way each database can subtract moments."""

    type = Float()
    inherit_cache = True


@compiles(_SecondsBetween)
def _seconds_postgresql(element: _SecondsBetween, compiler: Any, **kw: Any) -> str:
    start, end = (compiler.process(arg, **kw) for arg in element.clauses)
    return f"EXTRACT(EPOCH FROM ({end} - {start}))"


@compiles(_SecondsBetween, "sqlite")
def _seconds_sqlite(element: _SecondsBetween, compiler: Any, **kw: Any) -> str:
    start, end = (compiler.process(arg, **kw) for arg in element.clauses)
    return f"((julianday({end}) - julianday({start})) * 86400.0)"


async def _recovery_times(session: AsyncSession, figures: Figures, start: datetime,
                          end: datetime) -> None:
    """Median and p90 from failure to recovery: only the middle and p90 ranks are fetched."""
    count = figures.recovered
    if not count:
        return
    wanted = {(count - 1) // 2 + 1, count // 2 + 1, max(1, math.ceil(0.9 * count))}
    seconds = _SecondsBetween(RecoveryCase.opened_at, RecoveryCase.recovered_at)
    ranked = select(seconds.label("seconds"),
                    func.row_number().over(order_by=seconds).label("rank")).where(
        _RECOVERED_IN, _within(RecoveryCase.recovered_at, start, end)).subquery()
    rows = (await session.execute(
        select(ranked.c.rank, ranked.c.seconds).where(ranked.c.rank.in_(sorted(wanted)))
    )).all()
    # SQLite's julianday() is exact to about a millisecond; round both databases alike
    at = {int(rank): round(float(value), 3) for rank, value in rows}
    figures.recovery_seconds_median = (at[(count - 1) // 2 + 1] + at[count // 2 + 1]) / 2
    figures.recovery_seconds_p90 = at[max(1, math.ceil(0.9 * count))]


# months in one billing period; a plan whose interval is unknown counts as monthly
_MONTHS_PER_PERIOD = case(
    *((Subscription.interval == unit, months) for unit, months in MONTHS_PER_INTERVAL.items()),
    else_=1.0,
) * func.coalesce(Subscription.interval_count, 1)


async def _mrr_saved(session: AsyncSession, figures: Figures, start: datetime,
                     end: datetime) -> None:
    """Recurring revenue kept: each recovered subscription's amount once, as a monthly amount
    (a yearly plan of 120.00 keeps 10.00 a month)."""
    kept = select(
        func.coalesce(RecoveryCase.subscription_id, -RecoveryCase.id).label("kept"),
        func.coalesce(Subscription.currency, RecoveryCase.currency).label("currency"),
        (cast(func.coalesce(Subscription.amount_minor, RecoveryCase.amount_minor), Float)
         / _MONTHS_PER_PERIOD).label("monthly"),
    ).outerjoin(Subscription, Subscription.id == RecoveryCase.subscription_id).where(
        _RECOVERED_IN, _within(RecoveryCase.recovered_at, start, end)).distinct().subquery()
    rows = (await session.execute(
        select(kept.c.currency, func.sum(kept.c.monthly)).group_by(kept.c.currency))).all()
    figures.mrr_saved = {currency: round(float(amount or 0)) for currency, amount in rows}


async def _cases_lost(session: AsyncSession, figures: Figures, period: Period,
                      weeks: Sequence[date]) -> WeeklyAmounts:
    lost = and_(_LOST_IN, _within(RecoveryCase.lost_at, period.start, period.end))
    week = _bucket_index(RecoveryCase.lost_at, _edges(weeks, period.zone))
    rows = (await session.execute(
        select(week, RecoveryCase.currency, func.count(), func.sum(RecoveryCase.amount_minor))
        .where(lost).group_by(literal_column("bucket"), RecoveryCase.currency)
    )).all()
    amounts: dict[str, int] = defaultdict(int)
    weekly: WeeklyAmounts = defaultdict(int)
    for index, currency, count, amount in rows:
        figures.lost += int(count)
        amounts[currency] += int(amount or 0)
        weekly[(int(index), currency)] += int(amount or 0)
    figures.lost_amount = dict(amounts)
    # subscriptions lost to a failed payment; a case without one counts by itself
    figures.churned = int(await session.scalar(select(func.count(func.distinct(
        func.coalesce(RecoveryCase.subscription_id, -RecoveryCase.id)))).where(lost)) or 0)
    return weekly


async def _active_at_start(session: AsyncSession, figures: Figures, start: datetime) -> None:
    """The churn rate's denominator: subscriptions active when the period began."""
    began = func.coalesce(Subscription.started_at, Subscription.created_at)
    figures.active_at_start = int(await session.scalar(
        select(func.count()).select_from(Subscription).where(
            began < start, or_(Subscription.ended_at.is_(None), Subscription.ended_at >= start)
        )
    ) or 0)


def _weekly_amounts(figures: Figures, weeks: Sequence[date], recovered: WeeklyAmounts,
                    lost: WeeklyAmounts) -> None:
    """Recovered and lost amount per week in the period's main currency."""
    amounts = figures.recovered_amount.keys() | figures.lost_amount.keys()
    currency = next((c for c in figures.currencies if c in amounts), None) or min(
        amounts, default=None)
    figures.chart_currency = currency
    figures.weekly_amounts = [
        WeekAmounts(first, recovered.get((i, currency), 0), lost.get((i, currency), 0))
        for i, first in enumerate(weeks[:-1])
    ]


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
    # a rating belongs to the agent whose handoff ended in the resolve that asked for it
    rated = select(Handoff.agent_id, Conversation.rating, Conversation.rating_comment,
                   Conversation.id, Conversation.member_id, Conversation.resolved_at).join(
        Conversation, Conversation.id == Handoff.conversation_id).where(
        Handoff.outcome == "resolved", Conversation.rating.is_not(None),
        _within(Handoff.ended_at, start, end))
    ratings: dict[int, list[int]] = {}
    for agent_id, stars, _comment, _conversation, *_ in set(
            (await session.execute(rated)).all()):  # once per agent and conversation
        ratings.setdefault(agent_id, []).append(int(stars))
    figures.per_agent = sorted(
        (AgentLoad(int(i), name, int(n), len(ratings.get(i, [])),
                   sum(ratings[i]) / len(ratings[i]) if ratings.get(i) else None)
         for i, name, n in rows),
        key=lambda a: (-a.conversations, a.name, a.agent_id),
    )
    named = rated.add_columns(Agent.name).outerjoin(Agent, Agent.id == Handoff.agent_id)
    figures.comments = [
        RatingComment(conversation_id, member_id, int(stars), comment, agent_name, resolved)
        for _agent, stars, comment, conversation_id, member_id, resolved, agent_name
        in (await session.execute(named.where(Conversation.rating_comment.is_not(None))
                                  .order_by(Conversation.resolved_at.desc()).limit(20))).all()
    ]


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
