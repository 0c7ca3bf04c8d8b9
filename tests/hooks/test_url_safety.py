"""Storage URLs are credentials and attack surface: no leak in messages, no SSRF, no DNS rebinding.

Three guarantees, each against real loopback sockets (the emulator's storage host, small servers
here) with only name resolution simulated where a real DNS server would be needed:

* a signed audio URL's query string and userinfo appear in no exception text (traceback
  included) and no log line, on every error path of both transports;
* every encoding of a link-local or cloud-metadata address is refused, even where private hosts
  are allowed; other non-public addresses only where they are not;
* the address a storage connection goes to is the one that was checked: one lookup per
  connection, so a name that answers differently the second time (DNS rebinding) gains nothing.
"""

from __future__ import annotations

import contextlib
import datetime
import http.server
import ipaddress
import json
import logging
import socket
import ssl
import threading
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from airflow_provider_tts.connection import ConnectionSettings, RetryPolicy
from airflow_provider_tts.exceptions import (
    TtsAudioUrlExpiredError,
    TtsAuthError,
    TtsBlockedHostError,
    TtsConnectionError,
    TtsError,
    TtsProtocolError,
    TtsRejectedRequestError,
    TtsServerError,
)
from airflow_provider_tts.hooks.tts import TtsHook
from airflow_provider_tts.transport import AsyncTransport, SyncTransport, check_storage_url
from airflow_provider_tts.vendors.base import ApiRequest, ApiResponse, http_error, json_body
from tests.conftest import TEST_KEY, ConnFactory

# The secrets of a pre-signed URL. None of these strings may appear in any message or log line.
SIGNATURE = "SECRETSIG"
PASSWORD = "SECRETPW"
USER = "leakuser"
ACCESS_KEY_ID = "AKIAIOSFODNN7EXAMPLE"
SECRETS = (SIGNATURE, PASSWORD, USER, ACCESS_KEY_ID, "X-Amz-")
QUERY = (
    f"X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential={ACCESS_KEY_ID}%2F20260101%2Fus-east-1%2Fs3%2Faws4_request"
    f"&X-Amz-Date=20260101T000000Z&X-Amz-Expires=3600&X-Amz-SignedHeaders=host&X-Amz-Signature={SIGNATURE}"
)
WHAT = "audio of revid_tts task 't'"


def signed(base: str, path: str) -> str:
    """``base`` (``scheme://host:port``) and ``path`` as a pre-signed URL with userinfo."""
    scheme, _, authority = base.partition("://")
    return f"{scheme}://{USER}:{PASSWORD}@{authority}{path}?{QUERY}"


def assert_no_secret(error: BaseException, caplog: pytest.LogCaptureFixture) -> None:
    """Neither the error, as a task log prints it (traceback and chained causes), nor a log line leaks."""
    texts = {
        "str": str(error),
        "repr": repr(error),
        "traceback": "".join(traceback.format_exception(error)),
        "log": caplog.text,
        "log records": "\n".join(record.getMessage() for record in caplog.records),
    }
    for where, text in texts.items():
        for secret in SECRETS:
            assert secret not in text, f"{secret!r} leaked into the {where}:\n{text[-3000:]}"


def settings_for(emu: Any, **changes: Any) -> ConnectionSettings:
    """Settings like a connection to the emulator's API (loopback: private storage hosts allowed)."""
    values: dict[str, Any] = {
        "conn_id": "c",
        "conn_type": "revid_tts",
        "api_key": SecretStr(TEST_KEY),
        "api_base_url": emu.revid_base_url,
        "status_base_url": emu.revid_status_base_url,
        "connect_timeout": 0.5,
        "read_timeout": 0.5,
        # One retry, so the retry warning a task log gets is part of what is checked.
        "retry": RetryPolicy(max_retries=1, backoff=0.0, max_backoff=0.0),
        "allow_private_hosts": True,
        **changes,
    }
    return ConnectionSettings(**values)


# ------------------------------------------------------------------------------- small servers


class _Redirector(http.server.BaseHTTPRequestHandler):
    location = ""

    def do_GET(self) -> None:
        self.send_response(302)
        self.send_header("Location", self.location)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def redirector() -> Iterator[tuple[int, type[_Redirector]]]:
    """A loopback server answering every GET with a 302 to ``handler.location``: (port, handler)."""
    handler = type("Handler", (_Redirector,), {})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield server.server_address[1], handler
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def closed_port() -> int:
    """A loopback port nothing listens on (connection refused)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def unanswered_port() -> Iterator[int]:
    """A loopback port whose listen backlog is full: a new connect hangs until its timeout."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(0)
    port = server.getsockname()[1]
    fillers = []
    for _ in range(3):
        filler = socket.socket()
        filler.setblocking(False)
        with contextlib.suppress(BlockingIOError):
            filler.connect(("127.0.0.1", port))
        fillers.append(filler)
    try:
        yield port
    finally:
        for filler in fillers:
            filler.close()
        server.close()


@dataclass
class Lookups:
    """A stand-in for DNS: ``socket.getaddrinfo`` answers for ``names`` from scripted lists."""

    answers: dict[str, list[str]]
    calls: list[str] = field(default_factory=list)
    connects: list[str] = field(default_factory=list)

    def answer(self, host: str) -> str:
        self.calls.append(host)
        script = self.answers[host]
        return script.pop(0) if len(script) > 1 else script[0]


@pytest.fixture
def fake_dns(monkeypatch: pytest.MonkeyPatch) -> Callable[[dict[str, list[str]]], Lookups]:
    """Script name resolution for some names, and record every TCP connect attempt.

    A connect to a link-local address is refused on the spot (no test may reach the network).
    """
    real_getaddrinfo = socket.getaddrinfo
    real_connect = socket.socket.connect

    def install(answers: dict[str, list[str]]) -> Lookups:
        lookups = Lookups({name: list(script) for name, script in answers.items()})

        def getaddrinfo(host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
            if isinstance(host, str) and host in lookups.answers:
                address = lookups.answer(host)
                family = socket.AF_INET6 if ":" in address else socket.AF_INET
                sockaddr = (address, int(port or 0), 0, 0) if family == socket.AF_INET6 else (address, int(port or 0))
                return [(family, socket.SOCK_STREAM, 6, "", sockaddr)]
            if isinstance(host, str) and host.endswith(".invalid"):
                raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
            return real_getaddrinfo(host, port, *args, **kwargs)

        def connect(sock: socket.socket, address: Any) -> Any:
            lookups.connects.append(str(address[0]))
            if ipaddress.ip_address(str(address[0]).split("%")[0]).is_link_local:
                raise ConnectionRefusedError(111, "refused by the test: link-local")
            return real_connect(sock, address)

        monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
        monkeypatch.setattr(socket.socket, "connect", connect)
        return lookups

    return install


# ------------------------------------------------------------- 1. no secret in messages or logs


@dataclass
class Scene:
    """What an error path may arrange: the emulator and three small loopback servers."""

    emu: Any
    redirector_port: int
    redirector: type[_Redirector]
    closed_port: int
    unanswered_port: int


@dataclass(frozen=True)
class ErrorPath:
    """One error path: how to make it happen, and what each transport raises."""

    name: str
    #: Arranges the failure (faults, a redirect) and returns the signed URL to fetch.
    arrange: Callable[[Scene], str]
    sync_error: type[TtsError]
    async_error: type[TtsError]
    changes: dict[str, Any] = field(default_factory=dict)
    #: "stream" opens and reads the audio; "call" reads a small (JSON) answer, as polls do.
    sync_via: str = "stream"


def _task(emu: Any, audio_bytes: int | None = None) -> str:
    return str(emu.create_task("revid_tts", "tts", delay=0, audio_bytes=audio_bytes))


def _storage(emu: Any, task_id: str) -> str:
    # "localhost", not the API's 127.0.0.1: off the API origin, so the storage rules apply.
    return signed(f"http://localhost:{emu.port}", f"/storage/revid/{task_id}.wav")


def _faulted(kind: str) -> Callable[[Scene], str]:
    def arrange(scene: Scene) -> str:
        # The first try and its retry (aiohttp may resend once on a reset connection by itself).
        scene.emu.inject(kind, 4, endpoint="storage")
        return _storage(scene.emu, _task(scene.emu))

    return arrange


def _redirected_to(location: Callable[[Scene], str]) -> Callable[[Scene], str]:
    def arrange(scene: Scene) -> str:
        scene.redirector.location = location(scene)
        return signed(f"http://127.0.0.1:{scene.redirector_port}", "/a.mp3")

    return arrange


ERROR_PATHS = [
    ErrorPath(
        "connection-refused",
        lambda scene: signed(f"http://127.0.0.1:{scene.closed_port}", "/a.mp3"),
        TtsConnectionError,
        TtsConnectionError,
    ),
    ErrorPath(
        "connect-timeout",
        lambda scene: signed(f"http://127.0.0.1:{scene.unanswered_port}", "/a.mp3"),
        TtsConnectionError,
        TtsConnectionError,
        {"connect_timeout": 0.2},
    ),
    ErrorPath("read-timeout", _faulted("slow"), TtsConnectionError, TtsConnectionError, {"read_timeout": 0.3}),
    ErrorPath("reset-before-answer", _faulted("reset"), TtsConnectionError, TtsConnectionError),
    ErrorPath("dropped-mid-body", _faulted("drop"), TtsConnectionError, TtsConnectionError),
    ErrorPath(
        "tls-error",  # https to a plain-http port: the handshake fails
        lambda scene: signed(f"https://localhost:{scene.emu.port}", f"/storage/revid/{_task(scene.emu)}.wav"),
        TtsConnectionError,
        TtsConnectionError,
    ),
    ErrorPath(
        "name-not-resolving",
        lambda scene: signed("http://audio-host.invalid", "/a.mp3"),
        TtsConnectionError,
        TtsConnectionError,
    ),
    ErrorPath("http-500", _faulted("500"), TtsServerError, TtsServerError),
    ErrorPath("http-502-html", _faulted("html"), TtsServerError, TtsServerError),
    ErrorPath("expired-403", _faulted("403"), TtsAudioUrlExpiredError, TtsAuthError),
    ErrorPath(
        "gone-404",
        lambda scene: _storage(scene.emu, "00000000-0000-0000-0000-000000000000"),
        TtsAudioUrlExpiredError,
        TtsRejectedRequestError,
    ),
    ErrorPath(
        "too-many-redirects",
        _redirected_to(lambda scene: signed(f"http://127.0.0.1:{scene.redirector_port}", "/again.mp3")),
        TtsProtocolError,
        TtsProtocolError,
    ),
    ErrorPath(
        "redirect-to-non-http",
        _redirected_to(lambda scene: signed("ftp://files.example.com", "/a.mp3")),
        TtsProtocolError,
        TtsProtocolError,
    ),
    ErrorPath(
        "redirect-to-metadata",
        _redirected_to(lambda scene: signed("http://169.254.169.254", "/latest/meta-data/")),
        TtsBlockedHostError,
        TtsBlockedHostError,
    ),
    ErrorPath(
        "private-host-not-allowed",
        lambda scene: _storage(scene.emu, _task(scene.emu)),
        TtsBlockedHostError,
        TtsBlockedHostError,
        {"allow_private_hosts": False},
    ),
    ErrorPath(
        "oversize-answer",  # over the 1 MiB a JSON answer may have
        lambda scene: _storage(scene.emu, _task(scene.emu, audio_bytes=1_500_000)),
        TtsProtocolError,
        TtsProtocolError,
        sync_via="call",
    ),
    ErrorPath(
        "not-json",  # audio where a JSON answer was expected
        lambda scene: _storage(scene.emu, _task(scene.emu)),
        TtsProtocolError,
        TtsProtocolError,
        sync_via="call",
    ),
]


def _parse(resp: ApiResponse) -> Any:
    """A parser as the vendors write them: an HTTP error for a non-2xx, JSON otherwise."""
    if resp.status >= 300:
        raise http_error(resp, WHAT)
    return json_body(resp, WHAT)


@pytest.fixture
def scene(
    emu: Any,
    redirector: tuple[int, type[_Redirector]],
    closed_port: int,
    unanswered_port: int,
    fake_dns: Callable[[dict[str, list[str]]], Lookups],
    caplog: pytest.LogCaptureFixture,
) -> Scene:
    fake_dns({})  # only makes *.invalid fail without asking a real DNS server
    caplog.set_level(logging.DEBUG)  # urllib3's request lines included
    return Scene(emu, redirector[0], redirector[1], closed_port, unanswered_port)


def _fetch(transport: SyncTransport, req: ApiRequest, via: str) -> None:
    if via == "call":
        transport.call(req, _parse)
        return
    with transport.open_stream(req) as audio:
        b"".join(audio.iter_chunks(1 << 16))


@pytest.mark.parametrize("path", ERROR_PATHS, ids=[path.name for path in ERROR_PATHS])
def test_sync_errors_never_carry_the_signed_url(
    path: ErrorPath, scene: Scene, caplog: pytest.LogCaptureFixture
) -> None:
    req = ApiRequest("GET", path.arrange(scene), what=WHAT, authenticated=False)
    transport = SyncTransport(settings_for(scene.emu, **path.changes))
    try:
        with pytest.raises(TtsError) as caught:
            _fetch(transport, req, path.sync_via)
    finally:
        transport.close()
    assert type(caught.value) is path.sync_error, caught.value
    assert_no_secret(caught.value, caplog)
    assert scene.emu.storage_key_leaks() == []


@pytest.mark.parametrize("path", ERROR_PATHS, ids=[path.name for path in ERROR_PATHS])
async def test_async_errors_never_carry_the_signed_url(
    path: ErrorPath, scene: Scene, caplog: pytest.LogCaptureFixture
) -> None:
    req = ApiRequest("GET", path.arrange(scene), what=WHAT, authenticated=False)
    transport = AsyncTransport(settings_for(scene.emu, **path.changes), shared=False)
    try:
        with pytest.raises(TtsError) as caught:
            await transport.call(req, _parse)
    finally:
        await transport.aclose()
    assert type(caught.value) is path.async_error, caught.value
    assert_no_secret(caught.value, caplog)
    assert scene.emu.storage_key_leaks() == []


def _signed_status(emu: Any, hook: TtsHook, audio_bytes: int | None = None) -> Any:
    task_id = emu.create_task("revid_tts", "tts", delay=0, audio_bytes=audio_bytes)
    status = hook.get_task_status(task_id, "tts")
    assert status.state == "succeeded", status
    return status.model_copy(update={"audio_url": _storage(emu, task_id)})


def _store_like_the_operator(hook: TtsHook, status: Any, tmp_path: Path, max_bytes: int = 1 << 30) -> None:
    """What ``TtsAudioToStorageOperator`` does with an audio URL: open, check the body, store."""
    from airflow_provider_tts.operators.tts import stream_audio_into
    from airflow_provider_tts.storage import check_audio_body, destination_path, peek

    with hook.open_audio(status) as audio:
        what = f"audio for task {status.tts_task_id!r} from {audio.url}"
        head, chunks = peek(audio.iter_chunks(1 << 16))
        check_audio_body(audio.content_type, head, what=what)
        stream_audio_into(
            destination_path(f"file://{tmp_path}/out.wav", None),
            chunks,
            audio,
            status,
            temp_name=".out.wav.tmp",
            retried=False,
            overwrite="replace",
            max_bytes=max_bytes,
            chunk_bytes=1 << 16,
        )


@pytest.mark.parametrize(
    ("name", "fault", "audio_bytes", "max_bytes", "error"),
    [
        ("non-audio-body", "html_200", None, 1 << 30, TtsProtocolError),
        ("oversize-body", None, 300_000, 100_000, TtsProtocolError),
        ("expired-twice", "403", None, 1 << 30, TtsAudioUrlExpiredError),
        ("dropped-mid-body", "drop", None, 1 << 30, TtsConnectionError),
    ],
)
def test_downloads_through_the_hook_never_carry_the_signed_url(
    name: str,
    fault: str | None,
    audio_bytes: int | None,
    max_bytes: int,
    error: type[TtsError],
    emu: Any,
    make_conn: ConnFactory,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    hook = TtsHook(make_conn("revid_tts", max_retries=0))
    status = _signed_status(emu, hook, audio_bytes)
    if fault:
        emu.inject(fault, 2, endpoint="storage")
    with pytest.raises(TtsError) as caught:
        _store_like_the_operator(hook, status, tmp_path, max_bytes)
    assert type(caught.value) is error, caught.value
    assert_no_secret(caught.value, caplog)
    assert any(SIGNATURE in r["path"] for r in emu.storage_requests())  # the signed URL was really used


class _Json(http.server.BaseHTTPRequestHandler):
    body = b"{}"

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(self.body)))
        self.end_headers()
        self.wfile.write(self.body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.mark.parametrize("mode", ["sync", "async"])
async def test_an_answer_quoting_a_signed_url_is_refused_without_quoting_the_signature(
    mode: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A vendor answer the parser refuses is quoted in the error; a signed URL inside it is not."""
    caplog.set_level(logging.DEBUG)
    signed_url = signed("https://cdn.example.com", "/runs/7.flac")
    body = f'{{"state": "SUCCESS", "run_id": 7, "output_url": "{signed_url}"}}'.encode()
    handler = type("Handler", (_Json,), {"body": body})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    conn = {
        "conn_type": "camb_ai",
        "host": f"http://127.0.0.1:{server.server_address[1]}/apis",
        "password": TEST_KEY,
        "extra": {"max_retries": 1, "retry_backoff": 0, "retry_max_backoff": 0},
    }
    monkeypatch.setenv("AIRFLOW_CONN_CAMB_ECHO", json.dumps(conn))
    hook = TtsHook("camb_echo")

    async def poll() -> Any:
        if mode == "sync":
            return hook.get_task_status("7f3a", "tts")
        return await hook.aget_task_status("7f3a", "tts")

    try:
        with pytest.raises(TtsProtocolError, match="expected an object with a string 'status'") as caught:
            await poll()
    finally:
        await hook.aclose()
        hook.close()
        server.shutdown()
        server.server_close()
    assert "cdn.example.com/runs/7.flac" in str(caught.value)  # the answer is still quoted
    assert_no_secret(caught.value, caplog)
    assert any("retry 1 of 1" in record.getMessage() for record in caplog.records)  # the log line was checked


# --------------------------------------------------- 3. link-local and metadata, in every encoding

# (address, allowed without private hosts, allowed with private hosts, words of the refusal)
ADDRESS_VERDICTS = [
    ("93.184.216.34", True, True, ""),
    ("2606:2800:220:1:248:1893:25c8:1946", True, True, ""),
    ("64:ff9b::5db8:d822", True, True, ""),  # NAT64 of the public 93.184.216.34
    ("169.254.169.254", False, False, "link-local"),
    ("169.254.170.2", False, False, "link-local"),  # ECS task metadata
    ("fe80::a9fe:a9fe", False, False, "link-local"),
    ("::ffff:169.254.169.254", False, False, "IPv4-mapped form of 169.254.169.254"),
    ("::ffff:a9fe:a9fe", False, False, "IPv4-mapped form of 169.254.169.254"),
    ("::ffff:0:a9fe:a9fe", False, False, "IPv4-translated form of 169.254.169.254"),
    ("::169.254.169.254", False, False, "IPv4-compatible form of 169.254.169.254"),
    ("64:ff9b::a9fe:a9fe", False, False, "NAT64 form of 169.254.169.254"),
    ("64:ff9b::169.254.169.254", False, False, "NAT64 form of 169.254.169.254"),
    ("64:ff9b:1::a9fe:a9fe", False, False, "NAT64 (local use) form of 169.254.169.254"),  # /96 layout
    ("64:ff9b:1:a9fe:a9:fe00::", False, False, "NAT64 (local use) form of 169.254.169.254"),  # /48 layout
    ("64:ff9b:1:a9:fe:a9fe::", False, False, "NAT64 (local use) form of 169.254.169.254"),  # /56 layout
    ("64:ff9b:1:0:a9:fea9:fe00:0", False, False, "NAT64 (local use) form of 169.254.169.254"),  # /64 layout
    ("2002:a9fe:a9fe::", False, False, "6to4 form of 169.254.169.254"),
    ("2002:a9fe:a9fe:1234::1", False, False, "6to4 form of 169.254.169.254"),
    ("2001:0:4136:e378:8000:63bf:5601:5601", False, False, "Teredo client form of 169.254.169.254"),
    ("fd00:ec2::254", False, False, "cloud metadata address fd00:ec2::254"),  # AWS IMDS over IPv6
    ("100.100.100.200", False, False, "cloud metadata address 100.100.100.200"),  # Alibaba Cloud
    ("::ffff:100.100.100.200", False, False, "cloud metadata address"),
    ("64:ff9b::6464:64c8", False, False, "NAT64 form of 100.100.100.200"),
    ("168.63.129.16", False, False, "cloud metadata address 168.63.129.16"),  # Azure WireServer
    ("10.0.0.5", False, True, "non-public address 10.0.0.5"),
    ("127.0.0.1", False, True, "non-public address 127.0.0.1"),
    ("::1", False, True, "non-public address ::1"),
    ("100.64.0.1", False, True, "non-public address 100.64.0.1"),
    ("fd12:3456::1", False, True, "non-public address fd12:3456::1"),
    ("::ffff:10.0.0.5", False, True, "non-public address"),
    ("64:ff9b::a00:5", False, True, "NAT64 form of 10.0.0.5"),
    ("2002:a00:5::", False, True, "6to4 form of 10.0.0.5"),
    ("0.0.0.0", False, True, "non-public address 0.0.0.0"),
]


def _bracketed(address: str) -> str:
    return f"[{address}]" if ":" in address else address


@pytest.mark.parametrize("allow_private", [False, True], ids=["private-refused", "private-allowed"])
@pytest.mark.parametrize("spelled", ["literal", "resolved"])
@pytest.mark.parametrize(
    ("address", "public_verdict", "private_verdict", "reason"), ADDRESS_VERDICTS, ids=[a[0] for a in ADDRESS_VERDICTS]
)
def test_every_encoding_of_an_address_gets_its_verdict(
    address: str,
    public_verdict: bool,
    private_verdict: bool,
    reason: str,
    spelled: str,
    allow_private: bool,
    fake_dns: Callable[[dict[str, list[str]]], Lookups],
) -> None:
    fake_dns({"audio.example.com": [address]})
    host = _bracketed(address) if spelled == "literal" else "audio.example.com"
    settings = ConnectionSettings(
        conn_id="c",
        conn_type="revid_tts",
        api_key=SecretStr("k"),
        api_base_url="https://api.revidapi.com/paid",
        status_base_url="https://tts.revidapi.com/api",
        allow_private_hosts=allow_private,
    )
    req = ApiRequest("GET", "https://x", what=WHAT, authenticated=False)
    url = f"https://{host}/a.mp3"
    if private_verdict if allow_private else public_verdict:
        assert check_storage_url(settings, req, url) == [ipaddress.ip_address(address)]
    else:
        with pytest.raises(TtsBlockedHostError) as caught:
            check_storage_url(settings, req, url)
        assert reason in str(caught.value)


@pytest.mark.parametrize(
    "name",
    [
        "metadata.google.internal",
        "METADATA.GOOGLE.INTERNAL.",
        "metadata",
        "metadata.azure.internal",
        "instance-data",
        "instance-data.ec2.internal",
        "metadata.tencentyun.com",
    ],
)
@pytest.mark.parametrize("allow_private", [False, True], ids=["private-refused", "private-allowed"])
def test_cloud_metadata_names_are_refused_whatever_they_resolve_to(
    name: str, allow_private: bool, fake_dns: Callable[[dict[str, list[str]]], Lookups]
) -> None:
    # An innocent-looking answer: the name alone must be enough (a proxy or a split resolver
    # would connect to the real service by name).
    lookups = fake_dns({name.lower().rstrip("."): ["93.184.216.34"], name: ["93.184.216.34"]})
    settings = ConnectionSettings(
        conn_id="c",
        conn_type="revid_tts",
        api_key=SecretStr("k"),
        api_base_url="http://127.0.0.1:8739/paid",
        status_base_url="http://127.0.0.1:8739/api",
        allow_private_hosts=allow_private,
        allow_http_hosts=True,
    )
    req = ApiRequest("GET", "https://x", what=WHAT, authenticated=False)
    with pytest.raises(TtsBlockedHostError, match="cloud metadata service"):
        check_storage_url(settings, req, f"http://{name}/computeMetadata/v1/")
    assert lookups.calls == []  # refused before any lookup


# ------------------------------------------------------------------------- 3c. DNS rebinding


def test_a_sync_storage_connection_goes_to_the_address_that_was_checked(
    emu: Any, fake_dns: Callable[[dict[str, list[str]]], Lookups]
) -> None:
    # First answer: the emulator on loopback (allowed, as the API base is loopback). Every later
    # answer: the metadata service. A check followed by a second lookup to connect would pass the
    # check and connect to 169.254.169.254.
    lookups = fake_dns({"rebind.example.com": ["127.0.0.1", "169.254.169.254"]})
    url = f"http://rebind.example.com:{emu.port}/storage/revid/{_task(emu)}.wav"
    req = ApiRequest("GET", url, what=WHAT, authenticated=False)

    transport = SyncTransport(settings_for(emu))
    try:
        with transport.open_stream(req) as audio:
            assert b"".join(audio.iter_chunks())[:4] == b"RIFF"
    finally:
        transport.close()
    assert lookups.calls == ["rebind.example.com"]  # one lookup, checked and connected to
    assert "169.254.169.254" not in lookups.connects

    transport = SyncTransport(settings_for(emu))  # a new connection looks the name up again
    try:
        with pytest.raises(TtsBlockedHostError, match=r"link-local address 169\.254\.169\.254"):
            transport.open_stream(req)
    finally:
        transport.close()
    assert lookups.calls == ["rebind.example.com", "rebind.example.com"]
    assert "169.254.169.254" not in lookups.connects
    assert len(emu.storage_requests()) == 1


async def test_an_async_storage_connection_goes_to_the_address_that_was_checked(
    emu: Any, fake_dns: Callable[[dict[str, list[str]]], Lookups]
) -> None:
    lookups = fake_dns({"rebind.example.com": ["127.0.0.1", "169.254.169.254"]})
    url = f"http://rebind.example.com:{emu.port}/storage/revid/{_task(emu)}.wav"
    req = ApiRequest("GET", url, what=WHAT, authenticated=False)

    transport = AsyncTransport(settings_for(emu), shared=False)
    try:
        answer = await transport.call(req, lambda resp: resp)
    finally:
        await transport.aclose()
    assert answer.status == 200
    assert lookups.calls == ["rebind.example.com"]
    assert "169.254.169.254" not in lookups.connects

    transport = AsyncTransport(settings_for(emu), shared=False)
    try:
        with pytest.raises(TtsBlockedHostError, match=r"link-local address 169\.254\.169\.254"):
            await transport.call(req, lambda resp: resp)
    finally:
        await transport.aclose()
    assert lookups.calls == ["rebind.example.com", "rebind.example.com"]
    assert "169.254.169.254" not in lookups.connects
    assert len(emu.storage_requests()) == 1


# ------------------------------------------------- pinned connections keep TLS verification and SNI


def _certificate(tmp_path: Path, name: str) -> tuple[Path, Path]:
    """A self-signed certificate for ``name`` and its key, as files."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp_path / f"{name}.pem", tmp_path / f"{name}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return cert_path, key_path


class _Audio(http.server.BaseHTTPRequestHandler):
    seen_keys: list[str | None]

    def do_GET(self) -> None:
        self.seen_keys.append(self.headers.get("x-api-key"))
        body = b"RIFF" + b"\0" * 60
        self.send_response(200)
        self.send_header("Content-Type", "audio/wav")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def tls_audio_server(tmp_path: Path) -> Iterator[tuple[int, Path, list[str], type[_Audio]]]:
    """An https audio host on 127.0.0.1 for audio.example.com: (port, its CA file, SNI names seen, handler)."""
    cert, key = _certificate(tmp_path, "audio.example.com")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    sni: list[str] = []
    context.sni_callback = lambda sock, name, ctx: sni.append(name or "")
    handler = type("Handler", (_Audio,), {"seen_keys": []})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield server.server_address[1], cert, sni, handler
    finally:
        server.shutdown()
        server.server_close()


def test_a_checked_https_connection_still_verifies_the_certificate_for_the_host_name(
    emu: Any,
    tls_audio_server: tuple[int, Path, list[str], type[_Audio]],
    fake_dns: Callable[[dict[str, list[str]]], Lookups],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    port, ca_file, sni, handler = tls_audio_server
    fake_dns({"audio.example.com": ["127.0.0.1"], "impostor.example.com": ["127.0.0.1"]})
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(ca_file))
    req = ApiRequest("GET", f"https://audio.example.com:{port}/a.wav?{QUERY}", what=WHAT, authenticated=False)
    transport = SyncTransport(settings_for(emu))
    try:
        with transport.open_stream(req) as audio:
            assert b"".join(audio.iter_chunks())[:4] == b"RIFF"
        assert sni == ["audio.example.com"]  # SNI is the name, though the socket went to 127.0.0.1

        # Same address, another name: the certificate does not match it, so no audio.
        other = ApiRequest("GET", f"https://impostor.example.com:{port}/a.wav", what=WHAT, authenticated=False)
        with pytest.raises(TtsConnectionError, match=r"SSLError.*(mismatch|not valid|doesn't match)"):
            transport.open_stream(other)
    finally:
        transport.close()
    assert handler.seen_keys == [None]  # and the key never went there


class _Proxy(_Audio):
    """A forward proxy that answers every request itself (records the absolute request targets)."""

    targets: list[str]

    def do_GET(self) -> None:
        self.targets.append(self.path)
        super().do_GET()


@pytest.mark.parametrize(("answer", "allowed"), [("127.0.0.1", True), ("169.254.169.254", False)])
def test_through_an_environment_proxy_the_host_is_still_checked(
    answer: str,
    allowed: bool,
    emu: Any,
    fake_dns: Callable[[dict[str, list[str]]], Lookups],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Behind a proxy the proxy resolves the name, so the worker cannot pin the address: it judges
    # its own lookup just before the request instead, and a refused host never reaches the proxy.
    handler = type("Proxy", (_Proxy,), {"targets": [], "seen_keys": []})
    proxy = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=proxy.serve_forever, daemon=True).start()
    for name in ("NO_PROXY", "no_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{proxy.server_address[1]}")
    fake_dns({"audio.example.com": [answer]})
    req = ApiRequest("GET", "http://audio.example.com/a.wav", what=WHAT, authenticated=False)
    transport = SyncTransport(settings_for(emu))
    try:
        if allowed:
            with transport.open_stream(req) as audio:
                assert b"".join(audio.iter_chunks())[:4] == b"RIFF"
        else:
            with pytest.raises(TtsBlockedHostError, match="link-local"):
                transport.open_stream(req)
    finally:
        transport.close()
        proxy.shutdown()
        proxy.server_close()
    assert handler.targets == (["http://audio.example.com/a.wav"] if allowed else [])
    assert handler.seen_keys == ([None] if allowed else [])
