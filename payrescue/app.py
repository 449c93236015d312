"""The composition root: assembles one aiohttp application for a process.

This is the one module that knows every part (`bot`, `mail`, `handoff`, billing webhooks); the parts
know only `payrescue` and meet through the database and the event bus.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from aiohttp import web
from sqlalchemy.ext.asyncio import AsyncEngine

from payrescue import health
from payrescue.clock import Clock
from payrescue.config import Settings
from payrescue.db import create_engine, create_sessionmaker
from payrescue.events import Bus, create_bus
from payrescue.keys import BUS, CLOCK, ENGINE, SESSIONMAKER, SETTINGS

MAX_BODY_BYTES = 1024 * 1024  # webhooks larger than 1 MiB are refused with 413


def init_app(
    settings: Settings,
    *,
    clock: Clock | None = None,
    bus: Bus | None = None,
    engine: AsyncEngine | None = None,
    with_bot: bool = True,
) -> web.Application:
    """Build the application; `engine` lets a caller (tests, the demo) share its own."""
    from payrescue.i18n import set_voice

    set_voice(settings.business_name, settings.sign_off)
    app = web.Application(client_max_size=MAX_BODY_BYTES)
    app[SETTINGS] = settings
    app[CLOCK] = clock or Clock()
    app[BUS] = bus or create_bus(settings.redis_url, settings.instance_name)
    if bus is None:  # a bus handed in belongs to the caller, who starts and closes it
        app.cleanup_ctx.append(_bus_lifetime)
    app.cleanup_ctx.append(_database(engine))
    health.setup_health(app)
    _setup_parts(app, with_bot=with_bot)
    return app


def _setup_parts(app: web.Application, *, with_bot: bool) -> None:
    # Imported here so that importing payrescue.app for its keys stays cheap.
    from payrescue.edge import setup_edge
    from payrescue.headers import setup_headers
    from payrescue.metrics import setup_metrics

    setup_metrics(app)  # first: its middleware times every request
    setup_headers(app)  # then the headers, which even the edge's refusals carry
    setup_edge(app)  # then the input checks, before any part reads a cookie or a form
    if with_bot:
        from bot.notifier import setup_notifier
        from bot.service import setup_bot

        setup_bot(app)
        setup_notifier(app)  # after the bot: it sends through the bot's client
    from handoff.app import setup_console

    setup_console(app)
    from payrescue.billing.http import setup_billing

    setup_billing(app)
    from mail.http import setup_mail_http
    from mail.inbound import setup_mail_inbound
    from mail.sender import setup_mail_sender

    setup_mail_http(app)
    setup_mail_inbound(app)
    if with_bot:  # the processes that deliver Telegram messages deliver e-mail too
        setup_mail_sender(app)


async def _bus_lifetime(app: web.Application) -> AsyncIterator[None]:
    await app[BUS].start()
    yield
    await app[BUS].close()


def _database(shared: AsyncEngine | None):  # noqa: ANN202 - an aiohttp cleanup context
    async def context(app: web.Application) -> AsyncIterator[None]:
        engine = shared or create_engine(app[SETTINGS].effective_database_url)
        app[ENGINE] = engine
        app[SESSIONMAKER] = create_sessionmaker(engine)
        yield
        if shared is None:
            await engine.dispose()

    return context
