"""E-mail, the second member-facing face beside `bot/`: the SMTP sender that drains the
outbox's e-mail rows (`sender`), the pages (`templates/`) and the
one-click unsubscribe (`http`). It never imports `bot` or `handoff`."""
