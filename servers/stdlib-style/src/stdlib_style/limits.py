"""What both of stdlib-style's workers promise a client about a request head, and the answers
they write themselves (worker.HeadFirstWorker and per_connection.ThreadPerConnectionWorker)."""

from __future__ import annotations

# A head must be complete this long after its first byte. Honest clients send the benchmark's
# ~100-byte heads in one segment. (granian's deadline, 30 s, also bounds its keep-alive idle
# time, so it is longer there: granian_conf.py. Here idle time is `keepalive`'s, 75 s.)
HEAD_TIMEOUT = 10.0
# nginx answers heads above 4 x 8 KiB with an error; the benchmark's heads are ~100 bytes. This
# also bounds what 16,384 connections (worker_connections) can make a worker buffer.
HEAD_LIMIT = 32 * 1024
# How long a closing socket waits for the client's FIN after ours, as gunicorn's close_graceful.
LINGER = 2.0
END_OF_HEAD = b"\r\n\r\n"
# A head ended by bare line feeds is malformed, but it is complete: the parser answers it 400.
END_OF_BARE_HEAD = b"\n\n"


def complete(head: bytes) -> bool:
    return END_OF_HEAD in head or END_OF_BARE_HEAD in head


def _answer(status: str, *headers: str) -> bytes:
    lines = "".join(f"{header}\r\n" for header in headers)
    return f"HTTP/1.1 {status}\r\nConnection: close\r\nContent-Length: 0\r\n{lines}\r\n".encode()


REQUEST_TIMEOUT = _answer("408 Request Timeout")
HEAD_TOO_LARGE = _answer("431 Request Header Fields Too Large")
# Past worker_connections: the client may try again in a moment, on another connection.
SERVICE_UNAVAILABLE = _answer("503 Service Unavailable", "Retry-After: 1")
