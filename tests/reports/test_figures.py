"""Every figure of the hand-made scenario against the value worked out by hand (both databases)."""

from __future__ import annotations

from datetime import UTC, date, datetime
from zoneinfo import ZoneInfo

import pytest

from payrescue.config import Settings
from payrescue.reports import (
    AgentLoad,
    CaseFilter,
    Group,
    Period,
    PeriodError,
    RateBucket,
    WeekAmounts,
    compute,
    list_cases,
    percentile,
)
from tests.reports.scenario import FIRST_DAY, LAST_DAY, seed

BERLIN = ZoneInfo("Europe/Berlin")
HOUR = 3600


@pytest.fixture
async def figures(session, settings: Settings):  # noqa: ANN001, ANN201
    await seed(session)
    return await compute(session, Period(FIRST_DAY, LAST_DAY, BERLIN), settings.hours, "en")


def test_period_is_whole_local_days_across_summer_time() -> None:
    period = Period(FIRST_DAY, LAST_DAY, BERLIN)
    assert period.start == datetime(2026, 3, 22, 23, 0, tzinfo=UTC)  # midnight CET
    assert period.end == datetime(2026, 4, 5, 22, 0, tzinfo=UTC)  # midnight CEST
    assert period.days == 14


def test_cases_opened_and_amount_at_risk(figures) -> None:  # noqa: ANN001
    # cases 1–6 opened inside; 7, 8 before; 9 at 23:30 the evening before; 10 just after
    assert figures.opened == 6
    assert figures.at_risk == {"EUR": 2900 + 4900 + 2900 + 2900 + 2900, "USD": 1500}
    assert figures.currencies == ["EUR", "USD"]


def test_recovered_lost_and_rate(figures) -> None:  # noqa: ANN001
    # recovered inside the period: 1, 2, 3 and 7 (opened earlier); case 9 recovered after it
    assert figures.recovered == 4
    assert figures.recovered_amount == {"EUR": 2900 + 4900 + 3100 + 4900}
    # of the six opened, 1, 2 and 3 came back
    assert figures.cohort_recovered == 3
    assert figures.recovery_rate == pytest.approx(3 / 6)
    # lost inside: case 4 (USD) and case 8 (opened in early March)
    assert figures.lost == 2
    assert figures.lost_amount == {"USD": 1500, "EUR": 1000}


def test_attribution_and_time_to_recovery(figures) -> None:  # noqa: ANN001
    assert figures.attribution == {"no_contact": 1, "bot": 2, "agent": 1}
    # 2 h (case 2), 26.5 h over the night summer time began (case 3),
    # 36 h (case 1), 13 days (case 7)
    assert figures.recovery_seconds_median == (26.5 * HOUR + 36 * HOUR) / 2
    assert figures.recovery_seconds_p90 == 13 * 24 * HOUR


def test_by_decline_category(figures) -> None:  # noqa: ANN001
    assert figures.by_category == [
        Group("insufficient_funds", 3, 2),  # cases 1, 3, 6
        Group("expired_card", 2, 1),  # cases 2, 5
        Group("issuer_declined", 1, 0),  # case 4
    ]
    assert figures.by_category[0].rate == pytest.approx(2 / 3)


def test_update_links(figures) -> None:  # noqa: ANN001
    assert figures.links_sent == 4  # links 1–4; link 5 went out in March
    assert figures.links_opened == 3  # links 1, 3 and 4
    # case 1 (link 1) and case 7 (link 5) were recovered after an open; case 3's link was
    # opened only after the money came back, case 2's never
    assert figures.recovered_after_open == 2
    assert figures.share_after_open == pytest.approx(2 / 4)


def test_conversations(figures) -> None:  # noqa: ANN001
    assert figures.handoffs == 5  # 1–5; handoff 6 came at 23:00 on 22 March local
    assert figures.handoff_reasons == {"asked_for_human": 3, "not_understood": 2,
                                       "large_amount": 1}
    # business seconds to the first answer: 2 min, 5 min, 30 min (weekend skipped),
    # 70 min (overnight) → median of the middle two
    assert figures.first_response_median == (5 * 60 + 30 * 60) / 2
    # to the end: 30 min, 1 h, 2 h, 2 h
    assert figures.resolution_median == (1 * HOUR + 2 * HOUR) / 2
    # ratings of the conversations each resolved in the period, once per conversation
    assert figures.per_agent == [AgentLoad(1, "Petra", 2, 2, 3.5),
                                 AgentLoad(2, "Jonas", 1, 1, 4.0)]
    assert [(c.conversation_id, c.stars, c.comment, c.agent_name) for c in figures.comments] \
        == [(3, 2, "Das hat <b>zu</b> lange gedauert", "Petra")]


def test_satisfaction(figures) -> None:  # noqa: ANN001
    assert figures.csat_count == 3  # conversation 5 was rated before the period
    assert figures.csat_average == pytest.approx((5 + 4 + 2) / 3)
    assert figures.csat_distribution == {1: 0, 2: 1, 3: 0, 4: 1, 5: 1}


def test_churn_and_mrr_saved(figures) -> None:  # noqa: ANN001
    # lost: case 4 (subscription 4) and case 8 (none) ÷ s1–s5 active on 23 March
    assert (figures.churned, figures.active_at_start) == (2, 5)
    assert figures.churn_rate == pytest.approx(2 / 5)
    # recovered subscriptions 1 (quarterly 87.00), 2 (cases 2 and 7: counted once) and
    # 3 (yearly 348.00), each as a monthly amount
    assert figures.mrr_saved == {"EUR": 2900 + 4900 + 2900}


def test_by_language(figures) -> None:  # noqa: ANN001
    # de: member 1 (cases 1, 6) and member 3 by Telegram's de-DE (case 3)
    # en: member 2 (case 2), member 5 (case 5), member 4 by the default (case 4)
    assert figures.by_language == [Group("de", 3, 2), Group("en", 3, 1)]


def test_chart_series(figures) -> None:  # noqa: ANN001
    days = {bucket.first: bucket for bucket in figures.rate_series}
    assert len(figures.rate_series) == 14  # a fortnight: one bucket per day
    assert days[date(2026, 3, 23)] == RateBucket(date(2026, 3, 23), 1, 1)
    assert days[date(2026, 3, 28)] == RateBucket(date(2026, 3, 28), 1, 1)
    assert days[date(2026, 3, 30)] == RateBucket(date(2026, 3, 30), 1, 0)
    assert days[date(2026, 4, 5)] == RateBucket(date(2026, 4, 5), 1, 0)
    assert sum(b.opened for b in figures.rate_series) == 6
    assert figures.chart_currency == "EUR"
    assert figures.weekly_amounts == [
        WeekAmounts(date(2026, 3, 23), 2900 + 4900 + 4900, 1000),
        WeekAmounts(date(2026, 3, 30), 3100, 0),  # case 3: 00:30 CEST on Monday
    ]
    assert not figures.empty


async def test_long_periods_chart_weeks_from_monday(session, settings: Settings) -> None:  # noqa: ANN001
    await seed(session)
    period = Period(date(2026, 3, 4), date(2026, 4, 5), BERLIN)  # a Wednesday, 33 days
    figures = await compute(session, period, settings.hours, "en")
    firsts = [bucket.first for bucket in figures.rate_series]
    assert firsts[:3] == [date(2026, 3, 4), date(2026, 3, 9), date(2026, 3, 16)]
    assert firsts[-1] == date(2026, 3, 30) and len(firsts) == 5
    assert [b.opened for b in figures.rate_series] == [0, 1, 1, 3, 3]  # 7 | 9 | 1–3 | 4–6


async def test_an_empty_period_gives_zeros(session, settings: Settings) -> None:  # noqa: ANN001
    period = Period(date(2025, 1, 1), date(2025, 1, 7), BERLIN)
    figures = await compute(session, period, settings.hours, "de")
    assert figures.empty
    assert (figures.opened, figures.recovered, figures.lost, figures.handoffs) == (0, 0, 0, 0)
    assert figures.at_risk == {} and figures.recovery_rate is None
    assert figures.attribution == {"no_contact": 0, "bot": 0, "agent": 0}
    assert figures.csat_distribution == {1: 0, 2: 0, 3: 0, 4: 0, 5: 0}
    assert figures.recovery_seconds_median is None and figures.churn_rate is None
    assert len(figures.rate_series) == 7 and figures.weekly_amounts[0].recovered == 0


async def test_cases_list_filters(session) -> None:  # noqa: ANN001
    await seed(session)
    period = Period(FIRST_DAY, LAST_DAY, BERLIN)
    every = await list_cases(session, period, CaseFilter())
    assert [row.case_id for row in every] == [6, 5, 4, 3, 2, 1]  # newest first
    recovered = await list_cases(session, period, CaseFilter(status="recovered",
                                                             decline_category="insufficient_funds"))
    assert [row.case_id for row in recovered] == [3, 1]
    assert [r.case_id for r in await list_cases(session, period, CaseFilter(currency="usd"))] == [4]
    by_agent = await list_cases(session, period, CaseFilter(attribution="agent"))
    assert [(r.case_id, r.recovered_amount_minor) for r in by_agent] == [(3, 3100)]


def test_period_parsing() -> None:
    now = datetime(2026, 4, 5, 21, 30, tzinfo=UTC)  # 23:30 on 5 April in Berlin
    assert Period.parse("14d", None, now, BERLIN) == Period(FIRST_DAY, LAST_DAY, BERLIN)
    assert Period.parse("2026-03-23", "2026-04-05", now, BERLIN).days == 14
    assert Period.last_days(7, now, BERLIN).first == date(2026, 3, 30)
    with pytest.raises(PeriodError, match="30d"):
        Period.parse("last month", None, now, BERLIN)
    with pytest.raises(PeriodError, match="before the start"):
        Period.parse("2026-04-05", "2026-04-01", now, BERLIN)
    with pytest.raises(PeriodError, match="at least 1"):
        Period.parse("0d", None, now, BERLIN)


def test_nearest_rank_percentile() -> None:
    assert percentile([1, 2, 3, 4, 5, 6, 7, 8, 9, 10], 90) == 9
    assert percentile([5], 90) == 5
    assert percentile([], 90) is None
