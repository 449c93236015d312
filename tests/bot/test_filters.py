"""Every filter and handler of the bot runs in the event loop.

aiogram runs a plain function — a bare magic filter (`F.chat.type == …`) is one — in a
worker thread, once per update: three such filters were a good part of the time it took to
relay a member's message. `bot.filters.InLoop` wraps them; this walks the whole dispatcher
so that a new router cannot bring the thread hops back unnoticed.
"""

from __future__ import annotations

from collections.abc import Iterator

from aiogram import Router

from bot.dispatcher import build_dispatcher


def _routers(router: Router) -> Iterator[Router]:
    yield router
    for sub in router.sub_routers:
        yield from _routers(sub)


def test_no_filter_or_handler_runs_in_a_worker_thread() -> None:
    threaded = []
    for router in _routers(build_dispatcher()):
        for update_type, observer in router.observers.items():
            # the router's own filters (`router.message.filter(…)`), then each handler's
            callables = list(observer._handler.filters or [])  # noqa: SLF001
            for handler in observer.handlers:
                callables += [handler, *(handler.filters or [])]
            threaded += [f"{router.name} {update_type}: {c.callback!r}"
                         for c in callables if not c.awaitable]
    assert threaded == []
