"""Assembles the agent console into the service's aiohttp application.

Everything lives under /console. Middlewares (sessions, CSRF, language) act on /console
paths only, so webhooks and the bot are untouched; the security headers are the whole
service's (`payrescue.headers`).
"""

from __future__ import annotations

from pathlib import Path

from aiohttp import web

from handoff import auth, canned, conversation, live, media, members, payment, queue, team
from handoff.csrf import csrf_middleware
from handoff.render import TEMPLATES, create_environment
from handoff.watch import watcher_lifetime
from payrescue.keys import SETTINGS

STATIC_DIR = Path(__file__).parent / "static"


def setup_console(app: web.Application) -> None:
    app[TEMPLATES] = create_environment()
    app[conversation.TYPING_SENT] = {}
    live.setup_live(app)
    auth.setup_auth(app, app[SETTINGS])  # adds the session middleware, which runs first
    # language before CSRF, so even a refused request is answered in the agent's language
    app.middlewares.extend([auth.language_middleware, csrf_middleware, team.rejected_banner])
    for part in (auth, queue, conversation, live, canned, media, team, members, payment):
        app.add_routes(part.routes())
    from handoff import dashboard  # the recovery figures (payrescue.reports)

    app.add_routes(dashboard.routes())
    app.router.add_static("/console/static", STATIC_DIR, name="console-static")
    app.cleanup_ctx.append(watcher_lifetime)
