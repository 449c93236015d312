"""The pages a member sees around an update link, in their language."""

from __future__ import annotations

from pathlib import Path

from aiohttp import web
from jinja2 import FileSystemLoader

from payrescue.config import Settings
from payrescue.i18n import _, template_environment, use_language

_ENV = template_environment(FileSystemLoader(Path(__file__).parent / "templates"))
NEW_LINK_PAYLOAD = "newlink"  # the bot answers /start newlink with a fresh link


def _page(language: str, status: int, title: str, text: str, button_url: str | None = None,
          button_label: str | None = None, form_url: str | None = None) -> web.Response:
    html = _ENV.get_template("update_link.html").render(
        language=language, title=title, text=text, button_url=button_url,
        button_label=button_label, form_url=form_url)
    return web.Response(text=html, status=status, content_type="text/html",
                        headers={"Cache-Control": "no-store", "Referrer-Policy": "no-referrer"})


def new_link_url(settings: Settings) -> str | None:
    if not settings.bot_username:
        return None
    return f"https://t.me/{settings.bot_username}?start={NEW_LINK_PAYLOAD}"


def refused(language: str, settings: Settings, *, expired: bool,
            renew_url: str | None = None) -> web.Response:
    """The link does not work. For a genuine expired link of an open case whose member we
    can reach, a button sends a fresh one (`renew_url`); else the way to ask in Telegram."""
    with use_language(language):
        if renew_url is not None:
            return _page(language, 410, _("This link has expired"),
                         _("For your security, payment links are only valid for a few days. "
                           "We will gladly send you a new one right away."),
                         button_label=_("Send me a new link"), form_url=renew_url)
        title = _("This link has expired") if expired else _("This link does not work")
        text = (_("For your security, payment links are only valid for a few days. "
                  "Our bot will send you a new one right away.") if expired else
                _("The link may be incomplete or changed. Our bot will send you a new one "
                  "right away."))
        url = new_link_url(settings)
        if url is None:
            text += " " + _("Just write “new link” in our Telegram chat.")
        return _page(language, 410 if expired else 404, title, text, url,
                     _("Get a new link in Telegram"))


def fresh_link_sent(language: str, channel: str | None) -> web.Response:
    with use_language(language):
        if channel == "email":
            text = _("A new link is on its way to your e-mail inbox.")
        elif channel == "telegram":
            text = _("A new link is waiting for you in our Telegram chat.")
        else:
            text = _("We cannot send you a new link right now. Please write to us and we "
                     "will sort it out.")
        return _page(language, 200 if channel else 409, _("New link"), text)


def settled(language: str) -> web.Response:
    with use_language(language):
        return _page(language, 200, _("All settled"),
                     _("This payment is already taken care of. Thank you!"))


def thanks(language: str) -> web.Response:
    with use_language(language):
        return _page(language, 200, _("Thank you!"),
                     _("Your payment details are saved. We'll take care of the rest and let "
                       "you know once the payment has gone through."))


def no_destination(language: str, settings: Settings) -> web.Response:
    with use_language(language):
        return _page(language, 200, _("Update your payment details"),
                     _("Please write to us in Telegram and we will help you update your "
                       "payment details."), new_link_url(settings) and
                     f"https://t.me/{settings.bot_username}", _("Open the Telegram chat"))


def unavailable(language: str, retry_url: str) -> web.Response:
    with use_language(language):
        return _page(language, 503, _("Please try again in a moment"),
                     _("The payment page cannot be reached right now. Your link stays "
                       "valid; please try again in a few minutes."), retry_url,
                     _("Try again"))
