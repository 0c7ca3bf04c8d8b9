"""What both transports apply to every request and answer: limits, headers, redirects.

The API key goes only with an authenticated request to one of the vendor's API origins, judged
hop by hop (:func:`key_headers`), so a redirect or a storage URL never receives it; redirects are
followed only for GETs, only to http(s), at most :data:`MAX_REDIRECTS` times (:func:`next_hop`);
a JSON answer over :data:`MAX_JSON_BODY` bytes is refused.
"""

from __future__ import annotations

from urllib.parse import urljoin, urlsplit

from airflow_provider_tts import __version__
from airflow_provider_tts.connection import ConnectionSettings, origin_of
from airflow_provider_tts.exceptions import TtsProtocolError
from airflow_provider_tts.transport.messages import safe_url
from airflow_provider_tts.vendors.base import ApiRequest

#: A JSON answer larger than this is not one of the vendors' small status or create bodies.
MAX_JSON_BODY = 1 << 20
MAX_REDIRECTS = 5
_REDIRECTS = frozenset({301, 302, 303, 307, 308})
USER_AGENT = f"airflow-provider-tts/{__version__}"


def is_vendor_call(settings: ConnectionSettings, req: ApiRequest, url: str, on_api_origin: bool | None = None) -> bool:
    """Whether ``req`` at ``url`` is a call of the vendor's API: authenticated, to one of its API origins.

    Only such a call gets the key, and only such calls are paced (``Pacer``): a storage download
    goes to another host, whose limits are not the vendor's.

    :param on_api_origin: ``origin_of(url) in settings.api_origins``, when the caller already knows it.
    """
    if on_api_origin is None:
        on_api_origin = origin_of(url) in settings.api_origins
    return req.authenticated and on_api_origin


def key_headers(
    settings: ConnectionSettings, req: ApiRequest, url: str, on_api_origin: bool | None = None
) -> dict[str, str]:
    """The key header, for a vendor call (:func:`is_vendor_call`) only."""
    if is_vendor_call(settings, req, url, on_api_origin):
        return {"x-api-key": settings.api_key.get_secret_value()}
    return {}


def next_hop(req: ApiRequest, current: str, status: int, location: str | None, hop: int) -> str | None:
    """The URL a redirect points to, or None when the response is not a redirect to follow."""
    if status not in _REDIRECTS or not location:
        return None
    try:
        target = urljoin(current, location)
    except ValueError:
        raise TtsProtocolError(f"{req.what}: a redirect to an unparseable Location") from None
    if req.method != "GET":
        raise TtsProtocolError(f"{req.what}: unexpected redirect of a {req.method} to {safe_url(target)}")
    if urlsplit(target).scheme not in ("http", "https"):
        raise TtsProtocolError(f"{req.what}: refusing a redirect to a non-http(s) URL {safe_url(target)!r:.120}")
    if hop >= MAX_REDIRECTS:
        raise TtsProtocolError(f"{req.what}: more than {MAX_REDIRECTS} redirects")
    return target


#: What a storage host answers for a pre-signed URL that expired, was revoked, or whose object is gone.
EXPIRED_URL_STATUSES = frozenset({401, 403, 404, 410})


def too_big(req: ApiRequest, url: str) -> TtsProtocolError:
    return TtsProtocolError(f"{req.what}: response from {safe_url(url)} is over {MAX_JSON_BODY} bytes")
