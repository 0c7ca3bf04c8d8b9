"""The bytes of the lean API client's requests and the decoding of a compressed answer (``http1``).

A request's bytes are built once per (request object, URL) and written poll after poll
(:class:`Wire`); a gzip or deflate answer a server sends despite ``Accept-Encoding: identity`` is
decoded as aiohttp decoded it, within :data:`MAX_JSON_BODY` (:func:`inflate`).
"""

from __future__ import annotations

import json
import zlib
from typing import TYPE_CHECKING
from urllib.parse import quote, urlencode, urlsplit

from airflow_provider_tts.exceptions import TtsProtocolError
from airflow_provider_tts.transport.messages import safe_url
from airflow_provider_tts.transport.rules import MAX_JSON_BODY, USER_AGENT, too_big

if TYPE_CHECKING:
    from collections.abc import Mapping

    from airflow_provider_tts.vendors.base import ApiRequest

#: (scheme, host, port) of a connection; connections are reused only for the same origin.
Origin = tuple[str, str, int]

_PATH_SAFE = "/%:@!$&'()*+,;=-._~"


class Wire:
    """A request as bytes, built once per (request object, URL) and written poll after poll."""

    __slots__ = ("data", "origin", "secrets")

    def __init__(self, req: ApiRequest, url: str, headers: Mapping[str, str], *, with_params: bool) -> None:
        parts = urlsplit(url)
        scheme = parts.scheme.lower()
        host = parts.hostname or ""
        default_port = 443 if scheme == "https" else 80
        port = parts.port or default_port
        self.origin: Origin = (scheme, host, port)
        target = quote(parts.path or "/", safe=_PATH_SAFE)
        query = parts.query
        if with_params and req.params:
            extra = urlencode(dict(req.params))
            query = f"{query}&{extra}" if query else extra
        if query:
            target += "?" + query
        netloc = f"[{host}]" if ":" in host else host
        if port != default_port:
            netloc += f":{port}"
        lines = [
            f"{req.method} {target} HTTP/1.1",
            f"Host: {netloc}",
            f"User-Agent: {USER_AGENT}",
            "Accept: application/json",
            "Accept-Encoding: identity",
        ]
        for name, value in headers.items():
            if "\r" in value or "\n" in value:
                raise TtsProtocolError(f"{req.what}: the {name} header holds a line break; not sent")
            lines.append(f"{name}: {value}")
        body = b""
        if req.json is not None:
            body = json.dumps(req.json).encode()
            lines.append("Content-Type: application/json")
        if req.json is not None or req.method != "GET":
            lines.append(f"Content-Length: {len(body)}")
        self.data = ("\r\n".join(lines) + "\r\n\r\n").encode() + body
        #: What a message quoting the server's bytes must never show (a server may echo a request).
        self.secrets = tuple(headers.values())


def inflate(body: bytes, encoding: str, req: ApiRequest, url: str) -> bytes:
    """A gzip or deflate body decoded, refused once it inflates past :data:`MAX_JSON_BODY`.

    The request asks for ``identity``; this is for servers that compress anyway, as aiohttp decoded them.
    """
    if encoding in ("gzip", "x-gzip"):
        decoder = zlib.decompressobj(16 + zlib.MAX_WBITS)
    elif encoding == "deflate":  # zlib-wrapped as the RFC says, or raw as some servers send it
        decoder = zlib.decompressobj(zlib.MAX_WBITS if body[:1] == b"\x78" else -zlib.MAX_WBITS)
    else:
        raise TtsProtocolError(f"{req.what}: unsupported Content-Encoding {encoding[:40]!r} from {safe_url(url)}")
    try:
        out = decoder.decompress(body, MAX_JSON_BODY + 1)
    except zlib.error:
        raise TtsProtocolError(f"{req.what}: undecodable {encoding} body from {safe_url(url)}") from None
    if len(out) > MAX_JSON_BODY:
        raise too_big(req, url)
    return out
