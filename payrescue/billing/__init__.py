"""Payment events in: provider webhooks, the generic API and CSV import become recovery cases.

Public entry points for other parts:
- `payrescue.billing.http.setup_billing(app)` — the routes;
- `payrescue.billing.links.create_update_link(session, case, settings, now)` — a member's link;
- `payrescue.billing.alerts.release_alert(session, alert_id, by, now)` — an admin's release;
- `payrescue.billing.declines.category(name)` — what a decline category means for the member.
"""
