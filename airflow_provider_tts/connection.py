"""Turn an Airflow connection into validated, typed settings for the hook.

Extras are an allowlist: every key is checked and converted here, and nothing from the extra dict
is ever passed through as a header or a client option. A bad connection fails with a message that
names the field, what arrived and what was expected, before any request is sent.
"""

from __future__ import annotations

import ipaddress
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from pydantic import SecretStr

from airflow_provider_tts.constants import DEFAULT_CONN_IDS as DEFAULT_CONN_IDS
from airflow_provider_tts.exceptions import TtsConfigError


@dataclass(frozen=True)
class RetryPolicy:
    """How one HTTP request is retried on transient failures (429, 5xx, timeouts, dropped connections).

    :param max_retries: retries after the first attempt; 0 disables retrying.
    :param backoff: first wait in seconds; it doubles on each retry, with up to as much again of jitter.
    :param max_backoff: ceiling of one wait, including a vendor's ``Retry-After``.
    """

    max_retries: int = 5
    backoff: float = 1.0
    max_backoff: float = 60.0

    def __post_init__(self) -> None:
        retries = self.max_retries
        if not isinstance(retries, int) or isinstance(retries, bool) or not 0 <= retries <= 20:
            raise TtsConfigError(f"max_retries must be an integer from 0 to 20, got {retries!r}")
        for name in ("backoff", "max_backoff"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not 0 <= value <= 3600:
                raise TtsConfigError(f"retry {name} must be a number of seconds from 0 to 3600, got {value!r}")


@dataclass(frozen=True)
class ConnectionSettings:
    """Everything the hook needs from a connection, validated.

    :param api_base_url: the vendor API base (Camb: everything; Revid: create calls).
    :param status_base_url: where statuses are polled (Revid's second host; Camb: same as the API).
    """

    conn_id: str
    conn_type: str
    api_key: SecretStr = field(repr=False)
    api_base_url: str
    status_base_url: str
    connect_timeout: float = 10.0
    read_timeout: float = 60.0
    #: Shared by every task of the connection in one process (``transport.Pacer``); None: no limit.
    requests_per_second: float | None = None
    max_in_flight: int | None = None
    retry: RetryPolicy = RetryPolicy()
    #: Audio URLs and redirects may lead to private and loopback addresses (never link-local ones).
    allow_private_hosts: bool = False
    #: Audio URLs and redirects may use plain http to any allowed host, not just private ones.
    allow_http_hosts: bool = False
    #: The account's price in credits per 1,000 spoken characters, replacing the vendor table's
    #: (``airflow_provider_tts.costs``); None: the table's.
    credits_per_1000_characters: float | None = None
    #: Defaults of the storing operators' ``max_characters`` / ``max_credits`` (an operator's own wins).
    max_characters: int | None = None
    max_credits: float | None = None

    @property
    def api_origins(self) -> frozenset[str]:
        """Origins (scheme://host:port) that may receive the API key: the vendor's API hosts only."""
        return frozenset({origin_of(self.api_base_url), origin_of(self.status_base_url)})


def origin_of(url: str) -> str:
    """``scheme://host:port`` of a URL, with the default port made explicit so comparisons are exact."""
    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    return f"{parts.scheme}://{(parts.hostname or '').lower()}:{port}"


def normalise_base_url(value: str, *, what: str, allow_http: bool = False) -> str:
    """Validate an http(s) base URL that will receive the API key, and strip its trailing slash.

    The key travels in a request header, so over plain http anyone on the path reads it. Plain
    http is therefore accepted only to this machine (:func:`is_loopback_host`: the emulator, a
    local proxy), where the traffic never leaves the host, or when ``allow_http`` says the operator
    vouches for the network (the ``allow_http_api`` extra: a trusted internal proxy).
    """
    parts = urlsplit(value.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise TtsConfigError(f"{what} must be an http:// or https:// URL with a host, got {value!r}")
    if parts.username or parts.password:
        raise TtsConfigError(f"{what} must not carry credentials in the URL; put the API key in the password")
    if parts.query or parts.fragment:
        raise TtsConfigError(f"{what} must not have a query or fragment, got {value!r}")
    url = urlunsplit((parts.scheme, parts.netloc, parts.path.rstrip("/"), "", ""))
    if parts.scheme == "http" and not allow_http and not is_loopback_host(parts.hostname):
        raise TtsConfigError(
            f"{what} {url!r} is plain http to {parts.hostname}, which is not this machine: the API key "
            "would travel unencrypted. Use https://, or, for a trusted internal proxy, set the "
            "connection extra allow_http_api to true"
        )
    return url


_NUMBER_EXTRAS: dict[str, tuple[float, float, bool]] = {
    # name: (minimum, maximum, integer?)
    "requests_per_second": (0.001, 10_000.0, False),
    "max_in_flight": (1, 1000, True),
    "connect_timeout": (0.001, 600.0, False),
    "read_timeout": (0.001, 3600.0, False),
    "max_retries": (0, 20, True),
    "retry_backoff": (0.0, 600.0, False),
    "retry_max_backoff": (0.0, 3600.0, False),
    # Costs (``airflow_provider_tts.costs``): a price override and the operators' default budgets.
    "credits_per_1000_characters": (0.0, 1e9, False),
    "max_characters": (0, 1e12, True),
    "max_credits": (0.0, 1e12, False),
}


#: Switches (see :func:`parse_connection`); booleans. ``allow_http_api`` lets the API base use
#: plain http to a host other than this machine; the other two are storage-host switches.
_BOOL_EXTRAS = frozenset({"allow_private_audio_hosts", "allow_http_audio_hosts", "allow_http_api"})


def _boolean(name: str, raw: Any) -> bool:
    if isinstance(raw, bool):
        return raw
    if isinstance(raw, str) and raw.strip().lower() in ("true", "false", "1", "0", "yes", "no"):
        return raw.strip().lower() in ("true", "1", "yes")
    raise TtsConfigError(f"connection extra {name!r} must be true or false, got {raw!r}")


def is_loopback_host(host: str) -> bool:
    """Whether ``host`` is this machine for certain: ``localhost``, ``127.0.0.0/8`` or ``::1``.

    Stricter than :func:`is_loopback_base` on purpose: it decides whether the API key may travel
    over plain http, so a name is trusted only when no resolver can send it elsewhere. Only
    ``localhost`` itself qualifies (``*.localhost`` maps to loopback only on some resolvers).
    """
    host = host.lower()
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def is_loopback_base(url: str) -> bool:
    """Whether an API base URL names this machine (``localhost`` or a loopback address)."""
    host = (urlsplit(url).hostname or "").lower()
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _number(name: str, raw: Any) -> float:
    low, high, integer = _NUMBER_EXTRAS[name]
    kind = "an integer" if integer else "a number"
    try:
        if isinstance(raw, bool):
            raise ValueError
        value = float(raw)
    except (TypeError, ValueError):
        raise TtsConfigError(f"connection extra {name!r} must be {kind}, got {raw!r}") from None
    if math.isnan(value) or not low <= value <= high or (integer and not value.is_integer()):
        raise TtsConfigError(f"connection extra {name!r} must be {kind} in [{low}, {high}], got {raw!r}")
    return value


def _extras(conn_type: str, extra: Mapping[str, Any], allowed: frozenset[str]) -> dict[str, Any]:
    """Keep only allowlisted extras; accept the legacy ``extra__<conn_type>__<key>`` spelling too."""
    prefix = f"extra__{conn_type}__"
    out: dict[str, Any] = {}
    for key, value in extra.items():
        name = key[len(prefix) :] if key.startswith(prefix) else key
        if name not in allowed:
            raise TtsConfigError(
                f"unknown extra {key!r} in a {conn_type} connection; allowed: {', '.join(sorted(allowed))}"
            )
        if value is not None and value != "":
            out[name] = value
    return out


def parse_connection(
    conn: Any,
    *,
    default_api_base_url: str,
    default_status_base_url: str | None,
) -> ConnectionSettings:
    """Validate an Airflow ``Connection`` of one of our types into :class:`ConnectionSettings`.

    ``host`` may be empty (vendor default), a full URL (``http://127.0.0.1:8739/apis``: how the
    emulator stands in), or a bare host name, which gets ``https://``, the port, and the connection's
    ``schema`` as path (the vendor's default path when that is empty).

    Storage hosts (audio URLs, redirect targets off the API's own origins) are restricted, because
    their addresses come from the vendor's answers, not from the connection: link-local addresses
    (``169.254.0.0/16``, ``fe80::/10``) and cloud metadata services, in every encoding, are always
    refused (``transport.StoragePolicy``); private, loopback and other non-global addresses only
    with ``allow_private_audio_hosts`` or when the API base itself is on loopback (the emulator, a
    local proxy); plain ``http`` only to such an allowed private host or with
    ``allow_http_audio_hosts``.

    The API bases (``host``, Revid's ``status_base_url``) receive the key, so they must be https,
    or plain http to this machine (``localhost``, ``127.0.0.0/8``, ``::1``); ``allow_http_api``
    lifts that for a trusted internal proxy (see :func:`normalise_base_url`).
    """
    conn_type = conn.conn_type or ""
    key = (conn.password or "").strip()
    if not key:
        raise TtsConfigError(f"connection {conn.conn_id!r} ({conn_type}) has no API key; put it in the password field")
    raw_extra = conn.extra_dejson if conn.extra else {}
    if not isinstance(raw_extra, Mapping):
        raise TtsConfigError(f"connection {conn.conn_id!r} extra must be a JSON object, got {raw_extra!r}")
    allowed = (
        frozenset(_NUMBER_EXTRAS) | _BOOL_EXTRAS | ({"status_base_url"} if default_status_base_url else frozenset())
    )
    extras = _extras(conn_type, raw_extra, allowed)

    host = (conn.host or "").strip()
    if not host:
        if conn.port:
            raise TtsConfigError(f"connection {conn.conn_id!r} sets a port but no host")
        api_base = default_api_base_url
    elif "://" in host:
        api_base = host if not conn.port else _with_port(host, int(conn.port))
    else:
        path = (conn.schema or "").strip("/") or urlsplit(default_api_base_url).path.strip("/")
        netloc = f"{host}:{int(conn.port)}" if conn.port else host
        api_base = f"https://{netloc}/{path}"
    allow_http_api = _boolean("allow_http_api", extras.get("allow_http_api", False))
    api_base = normalise_base_url(api_base, what=f"connection {conn.conn_id!r} host", allow_http=allow_http_api)

    if default_status_base_url is None:
        status_base = api_base
    else:
        status_base = normalise_base_url(
            str(extras.get("status_base_url", default_status_base_url)),
            what=f"connection {conn.conn_id!r} extra 'status_base_url'",
            allow_http=allow_http_api,
        )

    numbers = {name: _number(name, extras[name]) for name in _NUMBER_EXTRAS if name in extras}
    retry = RetryPolicy(
        max_retries=int(numbers.get("max_retries", RetryPolicy.max_retries)),
        backoff=numbers.get("retry_backoff", RetryPolicy.backoff),
        max_backoff=numbers.get("retry_max_backoff", RetryPolicy.max_backoff),
    )
    return ConnectionSettings(
        conn_id=conn.conn_id,
        conn_type=conn_type,
        api_key=SecretStr(key),
        api_base_url=api_base,
        status_base_url=status_base,
        connect_timeout=numbers.get("connect_timeout", ConnectionSettings.connect_timeout),
        read_timeout=numbers.get("read_timeout", ConnectionSettings.read_timeout),
        requests_per_second=numbers.get("requests_per_second"),
        max_in_flight=int(numbers["max_in_flight"]) if "max_in_flight" in numbers else None,
        retry=retry,
        allow_private_hosts=(
            _boolean("allow_private_audio_hosts", extras.get("allow_private_audio_hosts", False))
            or is_loopback_base(api_base)
        ),
        allow_http_hosts=_boolean("allow_http_audio_hosts", extras.get("allow_http_audio_hosts", False)),
        credits_per_1000_characters=numbers.get("credits_per_1000_characters"),
        max_characters=int(numbers["max_characters"]) if "max_characters" in numbers else None,
        max_credits=numbers.get("max_credits"),
    )


def _with_port(url: str, port: int) -> str:
    parts = urlsplit(url)
    if parts.port is not None and parts.port != port:
        raise TtsConfigError(f"connection host {url!r} and port {port} disagree")
    return urlunsplit(parts._replace(netloc=f"{parts.hostname}:{port}"))
