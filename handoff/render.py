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
    env.globals["delivery_error"] = delivery_error
    env.globals["file_kind"] = file_kind
    env.filters["subscription_status"] = cases.subscription_status_label
    env.filters["sender_label"] = sender_label
    env.filters["channel_label"] = channel_label
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


# why a queued message was withdrawn (`outbox.error` of a cancelled row)
_WITHDRAWN = {
    "case recovered": lazy_gettext("no longer needed: the payment came in"),
    "case lost": lazy_gettext("no longer needed: the case was closed"),
    "case held": lazy_gettext("held back: the payment provider has a fault"),
    "case withdrawn: subscription ended": lazy_gettext("no longer needed: the subscription "
                                                       "ended"),
    "no longer wanted by its case": lazy_gettext("no longer needed: the payment case changed"),
}


def delivery_error(error: str | None, channel: str = outbox.TELEGRAM,
                   status: str = outbox.FAILED) -> tuple[str, str]:
    """Why a message did not reach the member, in the agent's language, and the technical
    detail in the server's own (English) words, shown apart as code ("" when none). A row
    withdrawn for a reason not named here shows that reason as the detail only."""
    if not error:
        return "", ""
    if error == outbox.BLOCKED_REASON:
        return _("the member blocked the bot"), ""
    if error in _WITHDRAWN:
        return _(_WITHDRAWN[error]), ""
    if status == outbox.CANCELLED and error != outbox.EMAIL_PROBLEM_REASON:
        return "", error
    if error == outbox.EMAIL_PROBLEM_REASON or error.startswith("address "):
        return _("the member's e-mail address doesn't accept mail"), error.partition(" ")[2]
    if error.startswith("cannot build the e-mail"):
        return _("the e-mail could not be put together"), error.partition(": ")[2]
    if channel == outbox.EMAIL:
        return _("the mail server refused it"), error.removeprefix("refused by the server: ")
    return _("Telegram refused it"), error


_FILE_KINDS = {
    "photo": lazy_gettext("Photo"), "video": lazy_gettext("Video"),
    "voice": lazy_gettext("Voice message"), "audio": lazy_gettext("Audio file"),
    "video_note": lazy_gettext("Video message"), "sticker": lazy_gettext("Sticker"),
    "animation": lazy_gettext("Animated GIF"), "document": lazy_gettext("File"),
}


def file_kind(kind: str) -> str:
    """What a member sent, when the file has no name of its own: "Datei", "Sprachnachricht"."""
    return _(_FILE_KINDS.get(kind, _FILE_KINDS["document"]))


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
