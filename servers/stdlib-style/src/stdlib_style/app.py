"""The Falcon WSGI application: GET /hash and GET /health."""

from __future__ import annotations

import time

import falcon
import orjson

from .hashing import hash_chain
from .settings import Settings, load

ALLOWED = ["GET", "HEAD"]
# Every answer is made for its request (the hash is of the time it came): no cache may store one
# and answer the next request in the server's place, or a benchmark would measure the cache.
NO_STORE = "no-store"


def _not_allowed(req: falcon.Request, resp: falcon.Response, **params: object) -> None:
    raise falcon.HTTPMethodNotAllowed(ALLOWED, headers={"Cache-Control": NO_STORE})


class _Resource:
    """GET and HEAD only. Falcon would answer OPTIONS itself; the contract says 405 for it too."""

    def __init_subclass__(cls) -> None:
        for method in falcon.COMBINED_METHODS:
            if method not in ALLOWED and method != "WEBSOCKET":
                setattr(cls, f"on_{method.lower()}", staticmethod(_not_allowed))


class HashResource(_Resource):
    def __init__(self, settings: Settings) -> None:
        self._rounds = settings.hash_iterations
        self._source = settings.source

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        now = time.time_ns()
        resp.content_type = falcon.MEDIA_JSON
        resp.cache_control = (NO_STORE,)
        resp.data = orjson.dumps(
            {
                "hash": hash_chain(b"input-%d" % now, self._rounds),
                "timestamp": now // 1_000_000,
                "source": self._source,
            }
        )

    on_head = on_get


class HealthResource(_Resource):
    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.content_type = falcon.MEDIA_TEXT
        resp.cache_control = (NO_STORE,)
        resp.data = b"OK"

    on_head = on_get


def create_app(settings: Settings | None = None) -> falcon.App:
    """Build the WSGI app; gunicorn calls this once per worker."""
    settings = settings or load()
    app = falcon.App(media_type=falcon.MEDIA_JSON)
    app.add_route("/hash", HashResource(settings))
    app.add_route("/health", HealthResource())
    return app
