"""Keeping secrets and signed URLs out of text: messages, log lines and quoted response bodies.

A pre-signed URL's signature and credential live in its query string and userinfo. Here are the
only ways the transports put a URL or a failure into words: :func:`safe_url` names a URL without
them, :func:`failure_detail` describes a failure from its cause chain's class names and error codes
(never from a library's own text), :func:`scrub` cuts any query or userinfo out of free text, and
:func:`parse_without_secrets` does that to the message of a parser's error. While a transport sends
a request, urllib3's own log lines are scrubbed too (:func:`scrubbed_urllib3_logs`).

Importing this module imports neither requests nor urllib3: each is imported on first need (a
URL's query to take apart, a failure to describe).
"""

from __future__ import annotations

import contextlib
import http.client
import logging
import re
import socket
import ssl
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from typing import Any, TypeVar
from urllib.parse import unquote, unquote_plus, urlsplit, urlunsplit

from airflow_provider_tts.exceptions import TtsError
from airflow_provider_tts.vendors.base import ApiResponse

T = TypeVar("T")


def safe_url(url: str) -> str:
    """A URL for logs and messages: no query (pre-signed URLs carry signatures there), no userinfo.

    Never raises: it also names URLs that failed to parse (a bad port, a broken IPv6 literal),
    which are exactly the ones an error message has to mention.
    """
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
    except ValueError:
        return "<an unparseable URL>"
    try:
        port = parts.port
    except ValueError:
        port = None
    netloc = f"[{host}]" if ":" in host else host
    if port:
        netloc += f":{port}"
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def host_and_port(url: str) -> str:
    """``host:port`` of a URL as :func:`safe_url` writes it (never the userinfo ``netloc`` keeps)."""
    return urlsplit(safe_url(url)).netloc


#: A query string inside free text: a ``?`` right after a URL-ish character, up to white space or
#: a quote. Catches what exact matching cannot (a query another library re-encoded or cut short).
_QUERY_IN_TEXT = re.compile(r"(?<=[\w/.%~+-])\?[^\s'\"<>]*")
#: Userinfo inside free text: ``//user:password@``.
_USERINFO_IN_TEXT = re.compile(r"(?<=//)[^\s/?#@'\"<>]*@")
#: Shorter query values are not removed one by one from a message (``1``, ``3600`` are no secret
#: and removing them would garble the text); the whole query is removed whatever its length.
_MIN_SECRET_VALUE = 8


def _url_secrets(url: str) -> list[str]:
    """The parts of ``url`` that must never be printed: its query, its values, its userinfo.

    Raw and decoded spellings, longest first, because libraries quote URLs their own way before
    they put them into messages.
    """
    try:
        parts = urlsplit(url)
        username, password = parts.username, parts.password
    except ValueError:
        return [url]
    found: set[str] = set()
    if parts.query:
        import requests.utils

        query = parts.query
        found.update({query, unquote(query), unquote_plus(query), requests.utils.requote_uri(query)})
        for pair in query.split("&"):
            value = pair.partition("=")[2]
            if len(value) >= _MIN_SECRET_VALUE:
                found.update({value, unquote(value), unquote_plus(value)})
    userinfo = parts.netloc.rpartition("@")[0]
    if userinfo:
        found.update({userinfo, unquote(userinfo)})
        for part in (username, password):
            if part and len(part) >= 4:
                found.update({part, unquote(part)})
    return sorted((secret for secret in found if secret), key=len, reverse=True)


def scrub(text: str, *urls: str) -> str:
    """``text`` without any query string or userinfo: those of ``urls`` exactly, and any URL-shaped one.

    The last line of defence under :func:`safe_url` and :func:`failure_detail`, which keep URLs
    out of messages in the first place.
    """
    for url in urls:
        for secret in _url_secrets(url):
            text = text.replace(secret, "")
    return _USERINFO_IN_TEXT.sub("", _QUERY_IN_TEXT.sub("", text))


def cause_chain(exc: BaseException) -> list[BaseException]:
    """``exc`` and what it wraps, outermost first, as urllib3, requests and aiohttp nest them.

    urllib3 keeps the cause in ``reason``, requests and aiohttp in ``args`` or ``__cause__``.
    """
    chain: list[BaseException] = []
    cause: BaseException | None = exc
    while cause is not None and len(chain) < 8 and all(cause is not seen for seen in chain):
        chain.append(cause)
        nxt = getattr(cause, "reason", None)
        if not isinstance(nxt, BaseException):
            nxt = next((a for a in cause.args if isinstance(a, BaseException)), None)
        cause = nxt or cause.__cause__ or cause.__context__
    return chain


def _fact(exc: BaseException) -> str | None:
    """What one exception of a chain says, from fields that never hold a URL (error codes, reasons)."""
    import urllib3.exceptions

    if isinstance(exc, ssl.SSLCertVerificationError):
        return str(exc.verify_message or exc.reason or "certificate verify failed")
    if isinstance(exc, ssl.SSLError):
        return str(exc.reason) if exc.reason else None
    if isinstance(exc, socket.gaierror):
        return f"cannot resolve the host name ([Errno {exc.errno}] {exc.strerror})"
    if isinstance(exc, OSError) and exc.strerror:
        return f"[Errno {exc.errno}] {exc.strerror}"
    if isinstance(exc, http.client.IncompleteRead):
        # urllib3's subclass keeps a byte count where http.client keeps the bytes.
        partial: Any = exc.partial
        read = partial if isinstance(partial, int) else len(partial)
        more = f", {exc.expected} more expected" if exc.expected is not None else ""
        return f"{read} bytes read{more}"
    if isinstance(exc, (TimeoutError, urllib3.exceptions.TimeoutError)):
        return "timed out"
    return None


def failure_detail(exc: BaseException, *urls: str) -> str:
    """A failure in words that cannot carry a URL: the cause chain's class names and one fact.

    Library messages are not used: requests and urllib3 put the request path and query into theirs
    (``Max retries exceeded with url: /a.mp3?X-Amz-Signature=...``), aiohttp the whole URL
    (``Connection timeout to host http://...``). What is left still tells a refused connection
    from a timeout, a reset, a certificate problem or a body cut short; :func:`scrub` runs over it
    anyway. E.g. ``ConnectionError < MaxRetryError < NewConnectionError < ConnectionRefusedError:
    [Errno 111] Connection refused``.
    """
    chain = cause_chain(exc)
    names: list[str] = []
    for cause in chain:
        if not names or names[-1] != type(cause).__name__:
            names.append(type(cause).__name__)
    fact = next((f for f in map(_fact, reversed(chain)) if f), None)
    text = " < ".join(names) + (f": {fact}" if fact else "")
    return scrub(text, *urls)[:300]


#: Set while a transport sends a request: urllib3's own log lines (``"GET /a.mp3?X-Amz-...`` at
#: DEBUG, the URL of a retried request at WARNING) are scrubbed then, and only then, so the
#: filter changes nothing for other users of urllib3 in the process.
_SCRUB_URLLIB3_LOGS: ContextVar[bool] = ContextVar("airflow_provider_tts_scrub_urllib3_logs", default=False)


class _ScrubUrllib3Logs(logging.Filter):
    """Removes query strings and userinfo from urllib3's log arguments during our requests."""

    def filter(self, record: logging.LogRecord) -> bool:
        if _SCRUB_URLLIB3_LOGS.get() and isinstance(record.args, tuple):
            record.args = tuple(scrub(arg) if isinstance(arg, str) else arg for arg in record.args)
        return True


_URLLIB3_LOG_FILTER = _ScrubUrllib3Logs()
for _name in ("urllib3.connectionpool", "urllib3.poolmanager", "urllib3.util.retry"):
    logging.getLogger(_name).addFilter(_URLLIB3_LOG_FILTER)


def parse_without_secrets(parse: Callable[[ApiResponse], T], resp: ApiResponse) -> T:
    """``parse(resp)``, with any URL query string or userinfo cut out of a :class:`TtsError` it raises.

    Vendor answers carry signed URLs (a RevidAPI status holds its ``audio_url``, a Camb result
    its ``file_url``), and a parser that refuses an answer quotes an excerpt of it; that message
    would otherwise leave the transport with the signature in it. The exception is the same
    object (type, fields and cause kept), its text scrubbed.
    """
    try:
        return parse(resp)
    except TtsError as exc:
        text = str(exc)
        clean = scrub(text)
        if clean != text:
            exc.args = (clean, *exc.args[1:])
            exc.message = clean
        raise


@contextlib.contextmanager
def scrubbed_urllib3_logs() -> Iterator[None]:
    token = _SCRUB_URLLIB3_LOGS.set(True)
    try:
        yield
    finally:
        _SCRUB_URLLIB3_LOGS.reset(token)


def without_secrets(resp: ApiResponse, *urls: str) -> ApiResponse:
    """``resp`` with the URLs' secrets cut out of its body, for an error message quoting the body.

    A storage host may echo the request in its error page (S3's ``SignatureDoesNotMatch`` quotes
    the canonical request, credential included).
    """
    body = resp.body
    for url in urls:
        for secret in _url_secrets(url):
            body = body.replace(secret.encode(), b"")
    return ApiResponse(resp.status, resp.headers, body, resp.url)
