"""One router per feature; `bot.dispatcher.build_dispatcher` includes them in order."""
