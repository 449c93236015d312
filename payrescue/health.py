"""Liveness and readiness for load balancers and container health checks."""

from __future__ import annotations

import asyncio
import logging

from aiohttp import web
from sqlalchemy.exc import SQLAlchemyError

from payrescue.db.migrate import SchemaOutOfDate, ensure_current
from payrescue.keys import ENGINE

log = logging.getLogger(__name__)
routes = web.RouteTableDef()


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
    except (SQLAlchemyError, OSError, TimeoutError) as exc:
        log.warning("readiness check failed", extra={"error": type(exc).__name__})
        return web.json_response(
            {"status": "unavailable", "reason": "database unreachable"}, status=503
        )
    return web.json_response({"status": "ready"})
