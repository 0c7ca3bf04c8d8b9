"""HTTP for the hook: one retry policy, a sync transport (requests) and an async one (``http1``, aiohttp).

Both transports send the vendor's :class:`~airflow_provider_tts.vendors.base.ApiRequest` and hand
the response to the vendor's parser inside the same retry loop, so a malformed body on a poll is
retried like a 502 would be. What they share is written once:

* every request has a connect and a read timeout;
* transient failures (429, 5xx, timeouts, dropped connections, malformed bodies) are retried with
  exponential backoff and jitter, honouring ``Retry-After``; permanent ones (400, 401, 403, 422)
  are not; a create call is retried only when the vendor provably did not process it (``retry``);
* the API key is attached only to requests the vendor marks as authenticated *and* whose origin is
  one of the vendor's API origins, hop by hop, so a redirect or a storage URL never receives it
  (``rules``);
* sessions are reused: one sync transport (its ``requests.Session``) per connection in a process, shared
  by its hooks (``shared``), one keep-alive
  API client of our own (``http1``, a lean HTTP/1.1 client: polls are the triggerer's hot path)
  per event loop shared by the async transports (``aio``); storage downloads use aiohttp;
* a URL off the vendor's API origins (an audio URL, a redirect target) goes through a separate
  client whose connections resolve the host name once, judge every address
  (:class:`StoragePolicy` in ``hosts``: link-local and cloud-metadata addresses never, in any IPv6
  encoding; private ones only when allowed) and connect to a checked address, so a DNS answer that
  changes between the check and the connection (rebinding) cannot redirect the request;
* a storage host refusing an audio URL (401/403/404/410) is :class:`TtsAudioUrlExpiredError`,
  never an API-key error: the key is never sent there;
* no exception message or log line carries a URL's query string or userinfo (a pre-signed URL's
  signature and credential live there): messages name URLs through :func:`safe_url`, describe a
  failure from its cause chain's class names and error codes (:func:`failure_detail`), never
  from a library's own text, and do not chain the library exception, whose text (``...with url:
  /a.mp3?X-Amz-Signature=...``) a task log would print with the traceback (``messages``).

Every name is importable from this package, and each is imported with its module on first use:
importing the package itself costs nothing at DAG-parse time (no requests, no aiohttp, no
vendor models).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from airflow_provider_tts.lazy import lazy_names

if TYPE_CHECKING:
    from airflow_provider_tts.transport.aio import (
        SESSION_POOL,
        SHARED_POOL_LIMIT,
        AsyncTransport,
        SessionPool,
        new_client_session,
    )
    from airflow_provider_tts.transport.hosts import (
        METADATA_NAMES,
        METADATA_NETWORKS,
        HostRefused,
        IpAddress,
        StoragePolicy,
        address_refusal,
        check_storage_url,
        embedded_ipv4,
        is_metadata_name,
        precheck_storage_url,
        resolve_host,
    )
    from airflow_provider_tts.transport.messages import failure_detail, parse_without_secrets, safe_url, scrub
    from airflow_provider_tts.transport.retry import PACERS, Pacer, PacerRegistry, is_retryable, retry_kwargs
    from airflow_provider_tts.transport.rules import MAX_JSON_BODY, MAX_REDIRECTS, USER_AGENT
    from airflow_provider_tts.transport.shared import shared_transport
    from airflow_provider_tts.transport.sync import AudioStream, SyncTransport

#: Every name of the package, by the submodule that defines it: imported on first access.
_LAZY = {
    "AsyncTransport": "aio",
    "AudioStream": "sync",
    "HostRefused": "hosts",
    "IpAddress": "hosts",
    "MAX_JSON_BODY": "rules",
    "MAX_REDIRECTS": "rules",
    "METADATA_NAMES": "hosts",
    "METADATA_NETWORKS": "hosts",
    "PACERS": "retry",
    "Pacer": "retry",
    "PacerRegistry": "retry",
    "SESSION_POOL": "aio",
    "SHARED_POOL_LIMIT": "aio",
    "SessionPool": "aio",
    "StoragePolicy": "hosts",
    "SyncTransport": "sync",
    "shared_transport": "shared",
    "USER_AGENT": "rules",
    "address_refusal": "hosts",
    "check_storage_url": "hosts",
    "embedded_ipv4": "hosts",
    "failure_detail": "messages",
    "is_metadata_name": "hosts",
    "is_retryable": "retry",
    "new_client_session": "aio",
    "parse_without_secrets": "messages",
    "precheck_storage_url": "hosts",
    "resolve_host": "hosts",
    "retry_kwargs": "retry",
    "safe_url": "messages",
    "scrub": "messages",
}


__getattr__ = lazy_names(__name__, _LAZY)


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})


__all__ = [
    "MAX_JSON_BODY",
    "MAX_REDIRECTS",
    "METADATA_NAMES",
    "METADATA_NETWORKS",
    "PACERS",
    "SESSION_POOL",
    "SHARED_POOL_LIMIT",
    "USER_AGENT",
    "AsyncTransport",
    "AudioStream",
    "HostRefused",
    "IpAddress",
    "Pacer",
    "PacerRegistry",
    "SessionPool",
    "StoragePolicy",
    "SyncTransport",
    "address_refusal",
    "check_storage_url",
    "embedded_ipv4",
    "failure_detail",
    "is_metadata_name",
    "is_retryable",
    "new_client_session",
    "parse_without_secrets",
    "precheck_storage_url",
    "resolve_host",
    "retry_kwargs",
    "safe_url",
    "scrub",
    "shared_transport",
]
