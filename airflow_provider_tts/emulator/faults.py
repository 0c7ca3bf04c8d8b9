"""HTTP-level misbehaviour: the failures a real API, its gateway or the network produce.

Each fault answers *instead of* the endpoint (``slow`` is the exception: it delays, then answers
normally), so a faulted create never creates a task. The bodies imitate what clients meet in the
wild: JSON errors in the vendor's own shape, nginx HTML pages, truncated JSON, a connection cut
half-way through a body, and a TCP reset with no response at all. The permanent kinds (``401``,
``403``, ``422``: a key revoked or stripped of a permission mid-wait, a request the API rejects)
answer in the vendor's error shape too; they are only ever injected, never random.
"""

from __future__ import annotations

import email.utils
import json
import logging
import socket
import struct
import time
from typing import TYPE_CHECKING

from aiohttp import web

from .audio import SizedWav
from .config import CAMB, REVID, FaultConfig

if TYPE_CHECKING:
    import asyncio

log = logging.getLogger(__name__)

NGINX_502 = (
    "<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n"
    "<center><h1>502 Bad Gateway</h1></center>\r\n<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n"
)
MAINTENANCE_200 = (
    "<!DOCTYPE html>\n<html><head><title>Scheduled maintenance</title></head>\n"
    "<body><h1>We&rsquo;ll be right back</h1><p>The service is undergoing maintenance.</p></body></html>\n"
)

_REASONS = {
    401: "API key revoked",
    403: "This API key does not have permission to use this resource",
    429: "Too Many Requests",
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Gateway Timeout",
}


def error_body(api: str, status: int, message: str) -> bytes:
    """A JSON error in the shape each vendor uses (FastAPI ``detail`` for Camb.ai)."""
    if api == CAMB:
        payload: dict[str, object] = {"detail": message}
    elif api == REVID:
        payload = {"code": status, "status": "error", "message": message}
    else:
        payload = {"error": message, "status": status}
    return json.dumps(payload).encode()


def json_response(status: int, body: bytes, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(status=status, body=body, content_type="application/json", headers=headers)


def _validation_body(api: str, request: web.Request) -> bytes:
    """A 422 as each vendor words it: FastAPI's ``detail`` list for Camb.ai, a message for RevidAPI."""
    if api == CAMB:
        where = ["path", "task_id"] if request.method == "GET" else ["body"]
        detail = [{"type": "value_error", "loc": where, "msg": "Value error, rejected by the emulator", "input": None}]
        return json.dumps({"detail": detail}).encode()
    return error_body(api, 422, "Validation failed: rejected by the emulator")


def _malformed(api: str) -> bytes:
    if api == REVID:
        return b'{"code": 200, "task_id": "5f0c", "status": "compl'
    if api == CAMB:
        return b'{"status": "SUCCESS", "run_id": 10'
    return b"{'audio': <binary>"


def _set_linger_zero(transport: asyncio.BaseTransport) -> None:
    """SO_LINGER(1, 0) makes close() send a TCP RST instead of an orderly FIN."""
    sock = transport.get_extra_info("socket")
    if sock is None:
        return
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError as exc:  # pragma: no cover - platform specific
        log.debug("could not set SO_LINGER: %s", exc)


async def respond_with_fault(
    request: web.Request, kind: str, api: str, endpoint: str, faults: FaultConfig
) -> tuple[web.StreamResponse, int | str]:
    """Answer ``request`` with fault ``kind``; returns the response and the status to record."""
    if kind.startswith("429"):
        headers: dict[str, str] = {}
        if kind == "429":
            headers["Retry-After"] = faults.retry_after
        elif kind == "429_http_date":
            headers["Retry-After"] = email.utils.formatdate(time.time() + 2, usegmt=True)
        return json_response(429, error_body(api, 429, "Too Many Requests"), headers), 429
    if kind == "422":
        return json_response(422, _validation_body(api, request)), 422
    if kind in ("401", "403", "500", "502", "503", "504"):
        status = int(kind)
        return json_response(status, error_body(api, status, _REASONS[status])), status
    if kind == "html":
        return web.Response(status=502, text=NGINX_502, content_type="text/html"), 502
    if kind == "html_200":
        return web.Response(status=200, text=MAINTENANCE_200, content_type="text/html"), 200
    if kind == "malformed_json":
        return web.Response(status=200, body=_malformed(api), content_type="application/json"), 200
    transport = request.transport
    if kind == "reset":
        if transport is not None:
            _set_linger_zero(transport)
            transport.abort()
        # aiohttp notices the closed transport when it tries to send this and gives up quietly.
        return web.Response(status=500), "reset"
    if kind == "drop" and endpoint == "stream":
        # A stream that breaks off: 200, audio headers and a third of a chunked body, then FIN
        # without the terminating chunk. The vendor had begun generating (and charging).
        wav = SizedWav(64 * 1024, 22050)
        full = b"".join(bytes(chunk) for chunk in wav.chunks())
        resp = web.StreamResponse(status=200, headers={"Content-Type": "audio/wav", "X-Credits-Required": "1"})
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        await resp.write(full[: len(full) // 3])
        await resp.drain()
        if transport is not None:
            transport.close()
        return resp, "drop"
    if kind == "drop":
        if endpoint in ("result", "storage"):
            wav = SizedWav(64 * 1024, 22050)
            full = b"".join(bytes(chunk) for chunk in wav.chunks())
            content_type = "audio/wav"
        else:
            full = json.dumps({"status": "PENDING", "run_id": None, "message": "x" * 200}).encode()
            content_type = "application/json"
        resp = web.StreamResponse(status=200, headers={"Content-Type": content_type})
        resp.content_length = len(full)
        await resp.prepare(request)
        await resp.write(full[: len(full) // 3])
        await resp.drain()
        if transport is not None:
            transport.close()  # flushes what was written, then FIN: the body stays incomplete
        return resp, "drop"
    raise ValueError(f"fault {kind!r} has no canned response")
