"""Connection parsing: defaults, every accepted host form, and a clear error for each bad field."""

from __future__ import annotations

from typing import Any

import pytest
from airflow.sdk import Connection

from airflow_provider_tts.connection import RetryPolicy, origin_of, parse_connection
from airflow_provider_tts.exceptions import TtsConfigError
from airflow_provider_tts.vendors import CambAi, RevidTts, vendor_class

KEY = "sk-live-abcdef"


def _settings(conn_type: str = "camb_ai", **kw: Any):  # type: ignore[no-untyped-def]
    extra = kw.pop("extra", None)
    conn = Connection(conn_id="c", conn_type=conn_type, password=kw.pop("password", KEY), extra=extra, **kw)
    cls = vendor_class(conn_type, "c")
    return parse_connection(
        conn, default_api_base_url=cls.default_api_base_url, default_status_base_url=cls.default_status_base_url
    )


def test_defaults_per_vendor() -> None:
    camb = _settings("camb_ai")
    assert camb.api_base_url == camb.status_base_url == CambAi.default_api_base_url
    assert camb.retry == RetryPolicy()
    assert (camb.connect_timeout, camb.read_timeout) == (10.0, 60.0)
    revid = _settings("revid_tts")
    assert revid.api_base_url == RevidTts.default_api_base_url
    assert revid.status_base_url == RevidTts.default_status_base_url


def test_one_local_address_stands_in_for_every_base_url() -> None:
    s = _settings(
        "revid_tts", host="http://127.0.0.1:8123/paid/", extra='{"status_base_url": "http://127.0.0.1:8123/api"}'
    )
    assert s.api_base_url == "http://127.0.0.1:8123/paid"
    assert s.status_base_url == "http://127.0.0.1:8123/api"
    assert s.api_origins == {"http://127.0.0.1:8123"}


def test_bare_host_gets_https_port_and_default_path() -> None:
    assert _settings("camb_ai", host="client.camb.ai").api_base_url == "https://client.camb.ai/apis"
    assert (
        _settings("camb_ai", host="proxy.local", port=8443, schema="v1").api_base_url == "https://proxy.local:8443/v1"
    )


def test_extras_allowlisted_and_converted() -> None:
    s = _settings(
        "camb_ai",
        extra='{"connect_timeout": "2.5", "read_timeout": 9, "max_retries": 2, "retry_backoff": 0, '
        '"extra__camb_ai__retry_max_backoff": 4}',
    )
    assert (s.connect_timeout, s.read_timeout) == (2.5, 9.0)
    assert s.retry == RetryPolicy(max_retries=2, backoff=0.0, max_backoff=4.0)


def test_key_is_not_in_repr() -> None:
    s = _settings()
    assert KEY not in repr(s)
    assert KEY not in str(s.api_key)
    assert s.api_key.get_secret_value() == KEY


def test_origins_make_default_ports_explicit() -> None:
    assert origin_of("https://Client.Camb.ai/apis") == "https://client.camb.ai:443"
    assert origin_of("http://127.0.0.1:9/x") == "http://127.0.0.1:9"


@pytest.mark.parametrize(
    ("conn_type", "kw", "fragment"),
    [
        ("camb_ai", {"password": ""}, "no API key"),
        ("camb_ai", {"password": "   "}, "no API key"),
        ("camb_ai", {"extra": '{"headers": {"x": "y"}}'}, "unknown extra 'headers'"),
        ("camb_ai", {"extra": '{"status_base_url": "http://x"}'}, "unknown extra 'status_base_url'"),
        ("revid_tts", {"extra": '{"proxies": "http://evil"}'}, "unknown extra 'proxies'"),
        ("camb_ai", {"extra": '{"max_retries": 100}'}, "max_retries"),
        ("camb_ai", {"extra": '{"max_retries": 1.5}'}, "max_retries"),
        ("camb_ai", {"extra": '{"read_timeout": "fast"}'}, "read_timeout"),
        ("camb_ai", {"extra": '{"read_timeout": 0}'}, "read_timeout"),
        ("camb_ai", {"extra": '{"connect_timeout": true}'}, "connect_timeout"),
        ("camb_ai", {"host": "ftp://files.example.com/apis"}, "http:// or https://"),
        ("camb_ai", {"host": "file:///etc/passwd"}, "http:// or https://"),
        ("camb_ai", {"host": "http://user:pw@host/apis"}, "credentials"),
        ("camb_ai", {"host": "http://host/apis?x=1"}, "query"),
        ("camb_ai", {"port": 8080}, "port but no host"),
        ("revid_tts", {"extra": '{"status_base_url": "gopher://x"}'}, "status_base_url"),
    ],
)
def test_bad_connections_fail_clearly(conn_type: str, kw: dict[str, Any], fragment: str) -> None:
    with pytest.raises(TtsConfigError) as info:
        _settings(conn_type, **kw)
    assert fragment in str(info.value)


def test_unknown_connection_type() -> None:
    with pytest.raises(TtsConfigError, match="expected one of camb_ai, revid_tts"):
        vendor_class("http", "c")


def test_storage_host_switches_default_off_for_a_public_api_and_on_for_a_loopback_one() -> None:
    public = _settings("revid_tts")
    assert (public.allow_private_hosts, public.allow_http_hosts) == (False, False)
    local = _settings("camb_ai", host="http://127.0.0.1:8739/apis")
    assert (local.allow_private_hosts, local.allow_http_hosts) == (True, False)
    assert _settings("camb_ai", host="http://localhost:8739/apis").allow_private_hosts
    both = _settings("revid_tts", extra='{"allow_private_audio_hosts": "true", "allow_http_audio_hosts": true}')
    assert (both.allow_private_hosts, both.allow_http_hosts) == (True, True)


def test_a_storage_host_switch_that_is_not_a_boolean_is_a_clear_error() -> None:
    with pytest.raises(TtsConfigError, match=r"'allow_private_audio_hosts' must be true or false, got 'maybe'"):
        _settings("camb_ai", extra='{"allow_private_audio_hosts": "maybe"}')


def test_why_the_connection_types_keep_their_underscore() -> None:
    """Issue 16.6: Airflow warns "Connection schemes (type: camb_ai) shall not contain '_'".

    The warning comes from ``airflow.models.Connection.get_uri()``, which Airflow calls itself on
    every lookup of a database connection (to fill its secrets cache); the provider never builds a
    URI. A hyphenated type cannot replace ours: Airflow's URI parser turns '-' back into '_', so a
    ``camb-ai`` connection would come back from any URI (``AIRFLOW_CONN_*`` URI form, the cache) as
    ``camb_ai``. The public names therefore stay, and this pins the Airflow behaviour behind that.
    """
    from airflow.models.connection import Connection as CoreConnection

    assert CoreConnection(conn_id="x", uri="camb-ai://h").conn_type == "camb_ai"
    assert CoreConnection(conn_id="x", uri="revid-tts://h").conn_type == "revid_tts"
    uri = CoreConnection(
        conn_id="x", conn_type="camb_ai", host="http://127.0.0.1:8739/apis", password="k1234"
    ).get_uri()
    assert uri.startswith("camb-ai://")
    back = CoreConnection(conn_id="x", uri=uri)
    assert back.conn_type == "camb_ai"
    assert _settings("camb_ai", host=back.host, password=back.password).api_base_url == "http://127.0.0.1:8739/apis"


# ------------------------------------------------------------- the key travels only encrypted


PLAIN_HTTP_BASES: list[tuple[str, dict[str, Any], str]] = [
    ("camb_ai", {"host": "http://client.camb.ai/apis"}, "http://client.camb.ai/apis"),
    ("camb_ai", {"host": "http://10.0.0.5:8080/apis/"}, "http://10.0.0.5:8080/apis"),
    ("camb_ai", {"host": "http://proxy.internal/apis"}, "http://proxy.internal/apis"),
    ("camb_ai", {"host": "http://127.0.0.1.nip.io/apis"}, "http://127.0.0.1.nip.io/apis"),
    ("camb_ai", {"host": "http://localhost.example.com/apis"}, "http://localhost.example.com/apis"),
    ("camb_ai", {"host": "http://api.localhost/apis"}, "http://api.localhost/apis"),
    ("camb_ai", {"host": "http://[fe80::1]/apis"}, "http://[fe80::1]/apis"),
    ("camb_ai", {"host": "http://0.0.0.0:8739/apis"}, "http://0.0.0.0:8739/apis"),
    ("revid_tts", {"host": "http://api.revidapi.com/paid"}, "http://api.revidapi.com/paid"),
    # The status host gets the key too: one plain-http base is enough to refuse the connection.
    (
        "revid_tts",
        {"host": "http://127.0.0.1:8739/paid", "extra": '{"status_base_url": "http://tts.revidapi.com/api"}'},
        "http://tts.revidapi.com/api",
    ),
    ("revid_tts", {"extra": '{"status_base_url": "http://tts.revidapi.com/api"}'}, "http://tts.revidapi.com/api"),
]


@pytest.mark.parametrize(
    ("conn_type", "kw", "url"),
    PLAIN_HTTP_BASES,
    ids=[f"{c}-{k.get('host', 'default')}" for c, k, _ in PLAIN_HTTP_BASES],
)
def test_a_plain_http_api_base_off_this_machine_is_refused(conn_type: str, kw: dict[str, Any], url: str) -> None:
    with pytest.raises(TtsConfigError) as info:
        _settings(conn_type, **kw)
    message = str(info.value)
    assert repr(url) in message  # names the URL...
    assert "unencrypted" in message  # ...why...
    assert "allow_http_api" in message  # ...and the way out
    assert KEY not in message


@pytest.mark.parametrize(
    "host",
    [
        "http://127.0.0.1:8739/apis",
        "http://127.9.8.7/apis",
        "http://[::1]:8739/apis",
        "http://localhost:8739/apis",
        "http://LOCALHOST/apis",
        "https://client.camb.ai/apis",
        "https://10.0.0.5:8443/apis",
        "client.camb.ai",  # a bare host gets https://
    ],
)
def test_https_and_loopback_api_bases_are_accepted(host: str) -> None:
    assert _settings("camb_ai", host=host).api_base_url.startswith(("https://", "http://"))


def test_allow_http_api_opts_in_for_a_trusted_internal_proxy() -> None:
    camb = _settings("camb_ai", host="http://proxy.internal:8080/apis", extra='{"allow_http_api": true}')
    assert camb.api_base_url == "http://proxy.internal:8080/apis"
    revid = _settings(
        "revid_tts",
        host="http://proxy.internal/paid",
        extra='{"allow_http_api": "yes", "status_base_url": "http://proxy.internal/api"}',
    )
    assert (revid.api_base_url, revid.status_base_url) == ("http://proxy.internal/paid", "http://proxy.internal/api")
    # The legacy extra__<type>__ spelling is accepted too, like every allowlisted extra.
    legacy = _settings("camb_ai", host="http://proxy.internal/apis", extra='{"extra__camb_ai__allow_http_api": true}')
    assert legacy.api_base_url == "http://proxy.internal/apis"
    # false is the default, spelled out.
    with pytest.raises(TtsConfigError, match="unencrypted"):
        _settings("camb_ai", host="http://proxy.internal/apis", extra='{"allow_http_api": "false"}')
    # It is about the API bases only: storage hosts keep their own switches.
    assert (camb.allow_private_hosts, camb.allow_http_hosts) == (False, False)


def test_allow_http_api_must_be_a_boolean() -> None:
    with pytest.raises(TtsConfigError, match=r"'allow_http_api' must be true or false, got 'sometimes'"):
        _settings("camb_ai", host="http://proxy.internal/apis", extra='{"allow_http_api": "sometimes"}')
