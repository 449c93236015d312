"""Page rendering for the console: one Jinja2 environment over the shared catalogs.

Other console parts (the dashboard) render their pages with `render()`; their templates
extend `layout.html`, which brings the navigation, the CSRF meta tag and the static assets.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from aiohttp import web
from jinja2 import Environment, FileSystemLoader

from payrescue import handoff_rules, outbox
from payrescue.billing import cases
from payrescue.i18n import (
    _,
    current_language,
    format_datetime,
    lazy_gettext,
    ngettext,
    template_environment,
)
from payrescue.keys import SETTINGS

TEMPLATES_DIR = Path(__file__).parent / "templates"
TEMPLATES = web.AppKey("console_templates", Environment)


def create_environment() -> Environment:
    env = template_environment(FileSystemLoader(TEMPLATES_DIR))
    env.filters["waited"] = waited
    env.filters["reason"] = handoff_rules.badge
    env.filters["case_status"] = cases.status_label
    env.filters["delivery_error"] = delivery_error
    env.filters["sender_label"] = sender_label
    env.filters["channel_label"] = channel_label
    env.globals["blocked_reason"] = outbox.BLOCKED_REASON
    return env


# who wrote a timeline line and where: plain lookups, since a timeline shows hundreds of lines
# and a template's own `_()` costs many times a function's per call
SENDERS = {"member": lazy_gettext("Member"), "bot": lazy_gettext("Bot"),
           "agent": lazy_gettext("Agent"), "note": lazy_gettext("Internal note"),
           "system": lazy_gettext("Event")}
CHANNELS = {"telegram": lazy_gettext("Telegram"), "email": lazy_gettext("E-mail"),
            "console": lazy_gettext("Console"), "billing": lazy_gettext("Billing")}


def sender_label(sender: str) -> str:
    return _(SENDERS[sender]) if sender in SENDERS else sender


def channel_label(channel: str) -> str:
    return _(CHANNELS[channel]) if channel in CHANNELS else channel


def delivery_error(error: str) -> str:
    """Why a message did not reach the member, in the agent's language; Telegram's own
    words (English) only as the detail."""
    if error == outbox.BLOCKED_REASON:
        return _("the member blocked the bot")
    return _("Telegram refused it (%(detail)s)") % {"detail": error}


def waited(seconds: float) -> str:
    """A compact duration in the agent's language: 4 min, 2 h 05 min / 2 Std. 05 Min., 3 days."""
    minutes = int(seconds // 60)
    if minutes < 60:
        return _("%(n)s min") % {"n": minutes}
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return _("%(hours)s h %(minutes)s min") % {"hours": hours, "minutes": f"{minutes:02d}"}
    days = hours // 24
    return ngettext("%(num)d day", "%(num)d days", days) % {"num": days}


def waited_formats() -> dict[str, str]:
    """The same formats for the pages' own clock (console.js), which ticks without a reload."""
    return {"min": _("%(n)s min"), "hm": _("%(hours)s h %(minutes)s min"),
            "day": ngettext("%(num)d day", "%(num)d days", 1),
            "days": ngettext("%(num)d day", "%(num)d days", 2)}


def render_string(request: web.Request, name: str, context: dict[str, Any]) -> str:
    from handoff.auth import request_agent
    from handoff.csrf import csrf_token
    from handoff.team import ACTIVE_ALERTS, UNSEEN_REJECTED

    settings = request.config_dict[SETTINGS]
    base = {
        "agent": request_agent(request),
        "csrf_token": csrf_token(request),
        "language": current_language(),
        "waited_formats": waited_formats(),
        "path": request.path,
        "unseen_rejected": request.get(UNSEEN_REJECTED, 0),
        "active_alerts": request.get(ACTIVE_ALERTS, []),
        "when": lambda moment: format_datetime(moment, settings.zone, format="short")
        if moment else "",
    }
    return request.config_dict[TEMPLATES].get_template(name).render(base | context)


def render(
    request: web.Request, name: str, context: dict[str, Any] | None = None, *, status: int = 200
) -> web.Response:
    """Render `handoff/templates/<name>` in the agent's language as an HTML response."""
    return web.Response(
        text=render_string(request, name, context or {}),
        status=status,
        content_type="text/html",
    )
