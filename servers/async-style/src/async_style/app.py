"""The Starlette ASGI application: GET /hash and GET /health.

Shaped for the hot path; per-request CPU of each step measured in process (docs/performance.md,
"What each lever measured"): Starlette's defaults cost 14 µs over a raw ASGI callable, this shape 4 µs.

- The endpoints are ASGI callables, which Starlette's `Route` calls as they are: no `Request`
  object, no `request_response` and exception-handling wrappers around `send` (7 µs).
- The middleware stack is the router alone (3 µs): Starlette's ServerErrorMiddleware and
  ExceptionMiddleware each wrap `send` on every request. So the endpoints answer 405 themselves
  and the router's default answers 404; an unexpected exception reaches granian, which answers
  500 as ServerErrorMiddleware would.
- Fixed answers are Starlette responses built once; headers are pre-encoded bytes.
"""

from __future__ import annotations

from time import time_ns

from orjson import dumps
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from .hashing import hash_chain
from .settings import Settings, load

ALLOWED = ("GET", "HEAD")
# Every answer is made for its request (the hash is of the time it came): no cache may store one
# and answer the next request in the server's place, or a benchmark would measure the cache.
NO_STORE = {"Cache-Control": "no-store"}
NOT_ALLOWED = PlainTextResponse("Method Not Allowed", status_code=405, headers={"Allow": ", ".join(ALLOWED), **NO_STORE})
NOT_FOUND = PlainTextResponse("Not Found", status_code=404)
HEALTHY = PlainTextResponse("OK", headers=NO_STORE)
JSON = (b"content-type", b"application/json")
UNCACHED = (b"cache-control", b"no-store")


class HashEndpoint:
    """GET /hash: the work, then its JSON."""

    def __init__(self, rounds: int, source: str) -> None:
        self.rounds, self.source = rounds, source

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["method"] not in ALLOWED:
            await NOT_ALLOWED(scope, receive, send)
            return
        now = time_ns()
        body = dumps({"hash": hash_chain(b"input-%d" % now, self.rounds), "timestamp": now // 1_000_000, "source": self.source})
        await send({"type": "http.response.start", "status": 200,
                    "headers": [JSON, UNCACHED, (b"content-length", b"%d" % len(body))]})
        await send({"type": "http.response.body", "body": body})


class HealthEndpoint:
    """GET /health: a fixed answer."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await (HEALTHY if scope["method"] in ALLOWED else NOT_ALLOWED)(scope, receive, send)


class HashApp(Starlette):
    """A Starlette app whose middleware stack is its router (see the module docstring)."""

    def build_middleware_stack(self) -> ASGIApp:
        return self.router


def create_app(settings: Settings | None = None) -> Starlette:
    """Build the ASGI app; granian calls this once per worker."""
    settings = settings or load()
    app = HashApp(
        routes=[
            Route("/hash", HashEndpoint(settings.hash_iterations, settings.source)),
            Route("/health", HealthEndpoint()),
        ]
    )
    app.router.default = NOT_FOUND
    return app
