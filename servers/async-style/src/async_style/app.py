"""The Starlette ASGI application: GET /hash and GET /health."""

from __future__ import annotations

import time

import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from .hashing import hash_chain
from .settings import Settings, load

ALLOWED = ["GET", "HEAD"]


def create_app(settings: Settings | None = None) -> Starlette:
    """Build the ASGI app; granian calls this once per worker."""
    settings = settings or load()
    rounds = settings.hash_iterations
    source = settings.source

    async def hash_endpoint(request: Request) -> Response:
        now = time.time_ns()
        body = orjson.dumps(
            {
                "hash": hash_chain(b"input-%d" % now, rounds),
                "timestamp": now // 1_000_000,
                "source": source,
            }
        )
        return Response(body, media_type="application/json")

    async def health(request: Request) -> Response:
        return Response(b"OK", media_type="text/plain")

    return Starlette(
        routes=[
            Route("/hash", hash_endpoint, methods=ALLOWED),
            Route("/health", health, methods=ALLOWED),
        ]
    )
