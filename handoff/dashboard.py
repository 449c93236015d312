"""The recovery dashboard in the console, and its CSV downloads.

Everyone signed in sees the figures and charts; admins also see the workload per agent and
may download the figures and the cases list as CSV. The period comes from the query string:
`?days=7|30|90` or `?from=YYYY-MM-DD&to=YYYY-MM-DD` (local days in the business's zone).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import datetime
from urllib.parse import urlencode

from aiohttp import web

from handoff.auth import admin_required, login_required, request_agent
from handoff.render import render
from payrescue import charts, handoff_rules, report_export
from payrescue.billing import declines
from payrescue.config import Settings
from payrescue.i18n import _, current_language
from payrescue.keys import CLOCK, SESSIONMAKER, SETTINGS
from payrescue.reports import (
    ATTRIBUTIONS,
    CaseFilter,
    Figures,
    Period,
    PeriodError,
    compute,
    list_cases,
)

PRESETS = (7, 30, 90)
DEFAULT_DAYS = 30
CASE_STATUSES = ("open", "recovered", "lost")
_CATEGORY = re.compile(r"^[a-z_]{1,40}$")
_CURRENCY = re.compile(r"^[A-Za-z]{3}$")


def _period(query: Mapping[str, str], now: datetime, settings: Settings) -> Period:
    """The period the reader asked for; raises PeriodError with a sentence for them."""
    first, last = query.get("from", "").strip(), query.get("to", "").strip()
    if first or last:
        if not (first and last):
            raise PeriodError(_("Please give both a start and an end date."))
        try:
            return Period.parse(first, last, now, settings.zone)
        except PeriodError:
            raise PeriodError(_("Please give the dates as YYYY-MM-DD, the start no later "
                                "than the end and at most three years apart.")) from None
    days = query.get("days", str(DEFAULT_DAYS))
    if days not in {str(d) for d in PRESETS}:
        raise PeriodError(_("Please choose 7, 30 or 90 days, or two dates."))
    return Period.last_days(int(days), now, settings.zone)


def _period_query(period: Period, query: Mapping[str, str]) -> dict[str, str]:
    """The query that selects the same period again (for export links)."""
    if query.get("from") and query.get("to"):
        return {"from": period.first.isoformat(), "to": period.last.isoformat()}
    return {"days": str(period.days)}


async def _figures(request: web.Request) -> tuple[Figures, str | None]:
    settings = request.config_dict[SETTINGS]
    now = request.config_dict[CLOCK].now()
    problem = None
    try:
        period = _period(request.query, now, settings)
    except PeriodError as exc:
        problem = str(exc)
        period = Period.last_days(DEFAULT_DAYS, now, settings.zone)
    async with request.config_dict[SESSIONMAKER]() as session:
        figures = await compute(session, period, settings.hours, settings.default_language,
                                email_enabled=settings.email_enabled)
    return figures, problem


@login_required
async def dashboard_page(request: web.Request) -> web.StreamResponse:
    figures, problem = await _figures(request)
    settings = request.config_dict[SETTINGS]
    agent = request_agent(request)
    is_admin = agent is not None and agent.role == "admin"
    again = _period_query(figures.period, request.query)
    context = {
        "f": figures,
        "problem": problem,
        "is_admin": is_admin,
        "presets": PRESETS,
        "chosen_days": request.query.get("days", "" if "from" in request.query
                                         else str(DEFAULT_DAYS)),
        "period_title": report_export.period_title(figures),
        "percent": report_export.format_percent,
        "number": report_export.format_number,
        "duration": report_export.format_duration,
        "category": declines.label,
        "language_name": lambda key: report_export.label(report_export.LANGUAGE_LABELS, key),
        "reason": handoff_rules.label,
        "channel_label": lambda key: report_export.label(report_export.CHANNEL_LABELS, key),
        "email_enabled": settings.email_enabled,
        "attribution_label": lambda key: report_export.label(
            report_export.ATTRIBUTION_LABELS, key),
        "rate_chart": charts.recovery_rate_chart(figures.rate_series),
        "amounts_chart": charts.recovered_vs_lost_chart(figures.weekly_amounts,
                                                        figures.chart_currency),
        "reasons_chart": charts.reasons_chart(figures.handoff_reasons, {
            key: handoff_rules.label(key)
            for key in figures.handoff_reasons}),
        "figures_csv": "/console/dashboard/figures.csv?" + urlencode(again),
        "cases_csv": "/console/dashboard/cases.csv?" + urlencode(again),
        "comma_default": current_language() == "de",
    }
    return render(request, "dashboard.html", context, status=400 if problem else 200)


def _decimal_comma(request: web.Request) -> bool:
    wanted = request.query.get("comma")
    if wanted is None:
        return current_language() == "de"
    return wanted == "1"


def _csv(body: bytes, name: str, period: Period) -> web.Response:
    filename = f"payrescue-{name}-{period.first.isoformat()}_{period.last.isoformat()}.csv"
    return web.Response(body=body, headers={
        "Content-Type": "text/csv; charset=utf-8",
        "Content-Disposition": f'attachment; filename="{filename}"',
    })


@admin_required
async def figures_csv(request: web.Request) -> web.StreamResponse:
    figures, problem = await _figures(request)
    if problem:
        raise web.HTTPBadRequest(text=problem)
    return _csv(report_export.figures_csv(figures, _decimal_comma(request)), "figures",
                figures.period)


def _case_filter(query: Mapping[str, str]) -> CaseFilter:
    status = query.get("status") or None
    category = query.get("category") or None
    currency = query.get("currency") or None
    attribution = query.get("attribution") or None
    if status and status not in CASE_STATUSES:
        raise web.HTTPBadRequest(text=_("Unknown status; use open, recovered or lost."))
    if attribution and attribution not in ATTRIBUTIONS:
        raise web.HTTPBadRequest(text=_("Unknown attribution; use no_contact, bot or agent."))
    if category and not _CATEGORY.match(category):
        raise web.HTTPBadRequest(text=_("A decline category is lower-case letters and _."))
    if currency and not _CURRENCY.match(currency):
        raise web.HTTPBadRequest(text=_("A currency is a three-letter code such as EUR."))
    return CaseFilter(status, category, currency, attribution)


@admin_required
async def cases_csv(request: web.Request) -> web.StreamResponse:
    filters = _case_filter(request.query)
    settings = request.config_dict[SETTINGS]
    try:
        period = _period(request.query, request.config_dict[CLOCK].now(), settings)
    except PeriodError as exc:
        raise web.HTTPBadRequest(text=str(exc)) from None
    async with request.config_dict[SESSIONMAKER]() as session:
        rows = await list_cases(session, period, filters)
    return _csv(report_export.cases_csv(rows, settings.zone, _decimal_comma(request)), "cases",
                period)


def routes() -> list[web.RouteDef]:
    return [
        web.get("/console/dashboard", dashboard_page),
        web.get("/console/dashboard/figures.csv", figures_csv),
        web.get("/console/dashboard/cases.csv", cases_csv),
    ]
