"""Figures follow real payment events: signed webhooks in, cases made by billing, figures out."""

from __future__ import annotations

from pydantic import SecretStr
from sqlalchemy.ext.asyncio import AsyncEngine

from payrescue.app import init_app
from payrescue.billing import simulate
from payrescue.clock import FakeClock
from payrescue.config import Settings
from payrescue.events import Bus
from payrescue.members import add_member
from payrescue.reports import Period, compute


async def test_failed_and_recovered_payments_show_in_the_figures(
    aiohttp_client, settings: Settings, engine: AsyncEngine, sessionmaker,  # noqa: ANN001
    clock: FakeClock,
) -> None:
    settings = settings.model_copy(update={
        "generic_api_secret": SecretStr("generic-secret-for-the-figures-test-0123")})
    client = await aiohttp_client(init_app(settings, clock=clock, bus=Bus(), engine=engine,
                                           with_bot=False))
    emails = ["anna@example.org", "ben@example.org", "clara@example.org"]
    async with sessionmaker() as session, session.begin():
        for email, language in zip(emails, ["de", "en", "de"], strict=True):
            await add_member(session, email=email, name=email.split("@")[0].title(),
                             now=clock.now(), language=language, time_zone=None)

    async def send(action: str, email: str, **extra: object) -> None:
        async with sessionmaker() as session:
            results = await simulate.trigger(
                session, settings, action=action, email=email, provider="generic",
                base_url=str(client.make_url("")).rstrip("/"), now=clock.now(), **extra)
        assert all(status == 200 for _name, status, _text in results), results

    for email in emails:
        await send("failed-payment", email, reason="expired_card")
    await clock.advance(3600)
    await send("recovered", "ben@example.org")
    await send("failed-payment", "anna@example.org")  # a repeated failure of the same case

    async with sessionmaker() as session:
        figures = await compute(session, Period.last_days(7, clock.now(), settings.zone),
                                settings.hours, settings.default_language)
    assert (figures.opened, figures.recovered, figures.cohort_recovered) == (3, 1, 1)
    assert figures.at_risk == {"EUR": 3 * 2900}
    assert figures.recovered_amount == {"EUR": 2900}
    assert figures.attribution == {"no_contact": 1, "bot": 0, "agent": 0}  # nobody wrote Ben
    assert figures.recovery_seconds_median == 3600
    assert [(g.key, g.opened, g.recovered) for g in figures.by_language] == [("de", 2, 0),
                                                                             ("en", 1, 1)]
