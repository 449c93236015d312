"""Liveness and readiness for load balancers and container health checks.

A load balancer asks `/readyz` every few seconds: while the database is away, the log says
so once (and once when it is back), not once per probe.
"""

from __future__ import annotations

import asyncio
import logging

from aiohttp import web

from payrescue.db.migrate import SchemaOutOfDate, ensure_current
from payrescue.keys import ENGINE
from payrescue.outage import DATABASE, DATABASE_ERRORS, OutageLog

log = logging.getLogger(__name__)
routes = web.RouteTableDef()
OUTAGE = web.AppKey("readiness_outage", OutageLog)


def setup_health(app: web.Application) -> None:
    app.add_routes(routes)
    app[OUTAGE] = OutageLog(log, down="readiness check failed: database unreachable",
                            back="readiness check passes again after %d failed probes",
                            group=DATABASE)


@routes.get("/healthz")
async def healthz(_request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


@routes.get("/readyz")
async def readyz(request: web.Request) -> web.Response:
    try:
        async with asyncio.timeout(5):  # a hung database is as unready as a stopped one
            await ensure_current(request.app[ENGINE])
    except SchemaOutOfDate as exc:
        return web.json_response({"status": "unavailable", "reason": str(exc)}, status=503)
    except DATABASE_ERRORS as exc:
        request.app[OUTAGE].failed(exc)
        return web.json_response(
            {"status": "unavailable", "reason": "database unreachable"}, status=503
        )
    request.app[OUTAGE].succeeded()
    return web.json_response({"status": "ready"})
