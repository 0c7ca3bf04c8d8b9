"""The lean HTTP/1.1 client of API calls (``transport.http1``) against raw loopback servers.

Each server is a bare ``asyncio.start_server`` that writes exactly the bytes a test names, so
framing (byte by byte, chunked with trailers, read to close), compression the client did not ask
for, malformed answers, keep-alive and its failures are what the client really meets. What
matters most is the resend rule: a GET whose reused connection the server had closed is resent
once, a create never (``request_sent=True``), since a second create is a second paid task.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import ssl
import zlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from airflow_provider_tts.connection import ConnectionSettings, RetryPolicy
from airflow_provider_tts.exceptions import TtsConnectionError, TtsProtocolError
from airflow_provider_tts.transport import AsyncTransport, http1, wire
from airflow_provider_tts.transport.rules import MAX_JSON_BODY, USER_AGENT
from airflow_provider_tts.vendors.base import ApiRequest, ApiResponse
from tests.hooks.test_url_safety import _certificate

KEY = "k-SECRET-KEY-123"
OK_HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"


@dataclass
class Server:
    """What a scripted server saw: connections accepted and requests read (request line, headers, body)."""

    connections: int = 0
    requests: list[tuple[bytes, dict[bytes, bytes], bytes]] = field(default_factory=list)
    closed_by_client: asyncio.Event = field(default_factory=asyncio.Event)


async def read_request(reader: asyncio.StreamReader, server: Server) -> bool:
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except (asyncio.IncompleteReadError, ConnectionError):
        return False
    lines = head[:-4].split(b"\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(b":") for line in lines[1:])}
    body = await reader.readexactly(int(headers.get(b"content-length", b"0")))
    server.requests.append((lines[0], headers, body))
    return True


Script = Callable[[asyncio.StreamReader, asyncio.StreamWriter, Server, int], Awaitable[None]]


def run(
    script: Script,
    client: Callable[[AsyncTransport, str, Server], Awaitable[Any]],
    tls: ssl.SSLContext | None = None,
    **changes: Any,
) -> Any:
    """Serve ``script`` per connection (its number given) and run ``client`` with a transport to it.

    With ``tls`` the server speaks https as ``localhost``.
    """

    async def go() -> Any:
        server = Server()

        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            server.connections += 1
            try:
                await script(reader, writer, server, server.connections)
                if await reader.read(1) == b"":
                    server.closed_by_client.set()
            except ConnectionError:
                server.closed_by_client.set()
            finally:
                writer.close()

        listening = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=tls)
        port = listening.sockets[0].getsockname()[1]
        base = f"https://localhost:{port}" if tls else f"http://127.0.0.1:{port}"
        values: dict[str, Any] = {
            "conn_id": "lean",
            "conn_type": "camb_ai",
            "api_key": SecretStr(KEY),
            "api_base_url": base,
            "status_base_url": base,
            "connect_timeout": 5.0,
            "read_timeout": 10.0,
            "retry": RetryPolicy(max_retries=0, backoff=0.0, max_backoff=0.0),
            "allow_private_hosts": True,
            **changes,
        }
        transport = AsyncTransport(ConnectionSettings(**values), shared=False)
        try:
            return await client(transport, base, server)
        finally:
            await transport.aclose()
            listening.close()

    return asyncio.run(go())


def get(base: str, path: str = "/tts/1", **kw: Any) -> ApiRequest:
    return ApiRequest("GET", base + path, what="status of task '1'", **kw)


async def call(transport: AsyncTransport, req: ApiRequest) -> ApiResponse:
    return await transport.call(req, lambda resp: resp)


def answering(*answers: bytes) -> Script:
    """Answer the connection's requests with ``answers`` in turn, then stop."""

    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, server: Server, n: int) -> None:
        for answer in answers:
            if not await read_request(reader, server):
                return
            writer.write(answer)
            await writer.drain()

    return script


def sized(body: bytes, head: bytes = OK_HEAD) -> bytes:
    return head + b"Content-Length: %d\r\n\r\n" % len(body) + body


# ----------------------------------------------------------------------------- framing


def test_an_answer_written_byte_by_byte_and_the_request_it_answers() -> None:
    answer = sized(b'{"status": "PENDING"}', OK_HEAD + b"X-Credits-Required: 3\r\n")

    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, server: Server, n: int) -> None:
        await read_request(reader, server)
        for i in range(len(answer)):
            writer.write(answer[i : i + 1])
            await writer.drain()
            await asyncio.sleep(0)

    async def client(transport: AsyncTransport, base: str, server: Server) -> ApiResponse:
        return await call(transport, get(base, params={"output_type": "raw bytes"}))

    server_seen: list[Server] = []

    async def keep(transport: AsyncTransport, base: str, server: Server) -> ApiResponse:
        server_seen.append(server)
        return await client(transport, base, server)

    resp = run(script, keep)
    assert (resp.status, resp.body, resp.headers["x-credits-required"]) == (200, b'{"status": "PENDING"}', "3")
    line, headers, body = server_seen[0].requests[0]
    assert line == b"GET /tts/1?output_type=raw+bytes HTTP/1.1"
    assert headers[b"x-api-key"] == KEY.encode()
    assert headers[b"user-agent"] == USER_AGENT.encode()
    assert headers[b"accept"] == b"application/json"
    assert headers[b"accept-encoding"] == b"identity"
    assert headers[b"host"].startswith(b"127.0.0.1:")
    assert body == b""


def test_a_post_sends_its_json_body_and_a_storage_like_path_gets_no_key() -> None:
    seen: list[Server] = []

    async def client(transport: AsyncTransport, base: str, server: Server) -> list[int]:
        seen.append(server)
        create = ApiRequest("POST", base + "/tts", what="create", json={"text": "héllo"}, idempotent=False)
        anonymous = ApiRequest("GET", base + "/open", what="open", authenticated=False)
        return [(await call(transport, create)).status, (await call(transport, anonymous)).status]

    assert run(answering(sized(b"{}"), sized(b"{}")), client) == [200, 200]
    (line, headers, body), (_, open_headers, _) = seen[0].requests
    assert line == b"POST /tts HTTP/1.1"
    assert headers[b"content-type"] == b"application/json"
    assert json.loads(body) == {"text": "héllo"}
    assert int(headers[b"content-length"]) == len(body)
    assert b"x-api-key" not in open_headers


def test_chunked_with_extensions_and_trailers_then_the_connection_is_reused() -> None:
    chunked = OK_HEAD + b'Transfer-Encoding: chunked\r\n\r\n5;ext=1\r\n{"a":\r\n3\r\n 1}\r\n0\r\nX-Trailer: t\r\n\r\n'

    async def client(transport: AsyncTransport, base: str, server: Server) -> list[bytes]:
        bodies = [(await call(transport, get(base))).body for _ in range(2)]
        assert server.connections == 1
        return bodies

    assert run(answering(chunked, chunked), client) == [b'{"a": 1}', b'{"a": 1}']


@pytest.mark.parametrize("encoding", ["gzip", "deflate"])
def test_a_compressed_answer_despite_identity_is_decoded(encoding: str) -> None:
    data = b'{"status": "SUCCESS"}'
    packed = gzip.compress(data) if encoding == "gzip" else zlib.compress(data)
    answer = sized(packed, OK_HEAD + b"Content-Encoding: " + encoding.encode() + b"\r\n")

    async def client(transport: AsyncTransport, base: str, server: Server) -> bytes:
        return (await call(transport, get(base))).body

    assert run(answering(answer), client) == data


def test_interim_answers_are_skipped() -> None:
    answer = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n" + sized(b"{}")

    async def client(transport: AsyncTransport, base: str, server: Server) -> int:
        return (await call(transport, get(base))).status

    assert run(answering(answer), client) == 200


# ------------------------------------------------------------------------------ keep-alive


@pytest.mark.parametrize(
    "first",
    [
        sized(b"{}", OK_HEAD + b"Connection: close\r\n"),
        sized(b"{}", b"HTTP/1.0 200 OK\r\n"),  # HTTP/1.0 without keep-alive
        OK_HEAD + b"\r\n{}",  # read to close
    ],
    ids=["connection-close", "http-1.0", "read-to-close"],
)
def test_a_connection_that_may_not_be_kept_is_not_reused(first: bytes) -> None:
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, server: Server, n: int) -> None:
        await read_request(reader, server)
        writer.write(first if n == 1 else sized(b"{}"))
        await writer.drain()
        if n == 1:
            writer.close()

    async def client(transport: AsyncTransport, base: str, server: Server) -> int:
        assert (await call(transport, get(base))).body == b"{}"
        assert (await call(transport, get(base))).body == b"{}"
        return server.connections

    assert run(script, client) == 2


def drops_the_second_request() -> Script:
    """Answer connection 1's first request (keep-alive), read its second and close without a byte."""

    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, server: Server, n: int) -> None:
        await read_request(reader, server)
        writer.write(sized(b"{}"))
        await writer.drain()
        if n == 1:
            await read_request(reader, server)
            writer.transport.abort()

    return script


def test_a_get_on_a_kept_connection_the_server_dropped_is_resent_once() -> None:
    async def client(transport: AsyncTransport, base: str, server: Server) -> tuple[int, int, int]:
        await call(transport, get(base))
        status = (await call(transport, get(base))).status
        return status, len(server.requests), server.connections

    assert run(drops_the_second_request(), client) == (200, 3, 2)


def test_a_get_reset_on_a_new_connection_before_any_byte_is_resent_once_and_twice_surfaces() -> None:
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, server: Server, n: int) -> None:
        await read_request(reader, server)
        if n in (1, 3, 4):
            writer.transport.abort()  # a reset, as the emulator's ``reset`` fault
        else:
            writer.write(sized(b"{}"))

    async def client(transport: AsyncTransport, base: str, server: Server) -> tuple[int, bool, int]:
        status = (await call(transport, get(base))).status  # reset once: resent, invisible
        await transport._client().close()  # the next GET on a new connection too
        with pytest.raises(TtsConnectionError, match="closed before the answer") as info:
            await call(transport, get(base))  # reset twice: surfaces
        return status, info.value.request_sent, len(server.requests)

    assert run(script, client) == (200, True, 4)


def test_a_create_on_a_kept_connection_the_server_dropped_is_never_resent() -> None:
    async def client(transport: AsyncTransport, base: str, server: Server) -> tuple[bool, int]:
        await call(transport, get(base))
        create = ApiRequest("POST", base + "/tts", what="create", json={"text": "x"}, idempotent=False)
        with pytest.raises(TtsConnectionError, match="connection closed before the answer") as info:
            await call(transport, create)
        return info.value.request_sent, len(server.requests)

    assert run(drops_the_second_request(), client) == (True, 2)


def test_a_create_after_the_server_closed_an_idle_connection_goes_on_a_new_one() -> None:
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, server: Server, n: int) -> None:
        await read_request(reader, server)
        writer.write(sized(b"{}"))
        await writer.drain()
        if n == 1:
            writer.close()  # the idle connection ends before the next request is written

    async def client(transport: AsyncTransport, base: str, server: Server) -> tuple[int, int]:
        await call(transport, get(base))
        idle = [conn for conns in transport._client()._idle.values() for conn in conns]
        for _ in range(1000):  # until the client has seen the close
            if all(conn.closed for conn in idle):
                break
            await asyncio.sleep(0.01)
        create = ApiRequest("POST", base + "/tts", what="create", json={"text": "x"}, idempotent=False)
        await call(transport, create)
        return len(server.requests), server.connections

    assert run(script, client) == (2, 2)


def test_idle_connections_are_closed_after_the_idle_timeout_and_when_the_pool_closes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(http1, "IDLE_TIMEOUT", 0.05)

    async def client(transport: AsyncTransport, base: str, server: Server) -> int:
        await call(transport, get(base))
        await asyncio.wait_for(server.closed_by_client.wait(), 10)  # swept while idle
        server.closed_by_client.clear()
        monkeypatch.setattr(http1, "IDLE_TIMEOUT", 60.0)
        await call(transport, get(base))
        await transport.aclose()
        await asyncio.wait_for(server.closed_by_client.wait(), 10)  # closed with the pool
        return server.connections

    assert run(answering(sized(b"{}")), client) == 2


# ------------------------------------------------------------------------- refusals and errors


def test_a_body_over_the_limit_is_refused_by_its_length_and_by_its_chunks() -> None:
    chunk = b"x" * 65536

    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, server: Server, n: int) -> None:
        await read_request(reader, server)
        if n == 1:
            writer.write(OK_HEAD + b"Content-Length: %d\r\n\r\n" % (MAX_JSON_BODY + 1))
        else:
            writer.write(OK_HEAD + b"Transfer-Encoding: chunked\r\n\r\n")
            for _ in range(MAX_JSON_BODY // len(chunk) + 8):
                writer.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                await writer.drain()

    async def client(transport: AsyncTransport, base: str, server: Server) -> int:
        for _ in range(2):
            with pytest.raises(TtsProtocolError, match=f"over {MAX_JSON_BODY} bytes"):
                await call(transport, get(base))
        return server.connections

    assert run(script, client) == 2  # a refused answer's connection is not reused


@pytest.mark.parametrize(
    ("answer", "what"),
    [
        (b"HTTX/1.1 200 OK\r\n\r\n", "status line"),
        (OK_HEAD + b"Bad Header\r\n\r\n", "header line"),
        (OK_HEAD + b"Transfer-Encoding: chunked\r\n\r\nzz\r\n", "chunk size"),
        (OK_HEAD + b"Content-Length: -1\r\n\r\n", "Content-Length"),
    ],
)
def test_a_malformed_answer_is_a_connection_error_naming_it_without_secrets(answer: bytes, what: str) -> None:
    async def client(transport: AsyncTransport, base: str, server: Server) -> None:
        with pytest.raises(TtsConnectionError, match=f"malformed {what}") as info:
            await call(transport, get(base, "/tts/1?sig=SIGNATURE"))
        assert "SIGNATURE" not in str(info.value)
        assert KEY not in str(info.value)

    run(answering(answer), client)


def test_a_status_line_echoing_the_request_shows_neither_key_nor_query() -> None:
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, server: Server, n: int) -> None:
        await read_request(reader, server)
        # the key across the 40 characters a message shows: no part of it may show
        writer.write(b"X " + b"p" * 30 + KEY.encode() + b" " + server.requests[0][0] + b"\r\n\r\n")

    async def client(transport: AsyncTransport, base: str, server: Server) -> str:
        with pytest.raises(TtsConnectionError, match="malformed status line") as info:
            await call(transport, get(base, "/s?sig=SIG"))
        return str(info.value)

    message = run(script, client)
    assert KEY[:6] not in message
    assert "SIG" not in message


def test_a_server_that_never_answers_is_a_read_timeout_after_the_request_was_sent() -> None:
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, server: Server, n: int) -> None:
        await read_request(reader, server)
        await asyncio.sleep(30)

    async def client(transport: AsyncTransport, base: str, server: Server) -> bool:
        with pytest.raises(TtsConnectionError, match="timed out") as info:
            await call(transport, get(base))
        return info.value.request_sent

    assert run(script, client, read_timeout=0.2) is True


def test_a_refused_connection_was_never_sent() -> None:
    async def client(transport: AsyncTransport, base: str, server: Server) -> bool:
        create = ApiRequest("POST", "http://127.0.0.1:1/tts", what="create", json={}, idempotent=False)
        with pytest.raises(TtsConnectionError) as info:
            await transport._client().request(wire.Wire(create, create.url, {}, with_params=True), create, create.url)
        return info.value.request_sent

    assert run(answering(), client) is False


def test_https_verifies_the_certificate_for_the_host_name_and_sends_it_as_sni(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cert, key = _certificate(tmp_path, "localhost")
    server_tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_tls.load_cert_chain(cert, key)
    sni: list[str] = []
    server_tls.sni_callback = lambda sock, name, ctx: sni.append(name or "")

    async def client(transport: AsyncTransport, base: str, server: Server) -> bool:
        with pytest.raises(TtsConnectionError, match="SSLCertVerificationError") as info:
            await call(transport, get(base))  # the default context does not trust this certificate
        monkeypatch.setattr(http1, "_tls", lambda: ssl.create_default_context(cafile=str(cert)))
        assert (await call(transport, get(base))).body == b"{}"
        return info.value.request_sent

    assert run(answering(sized(b"{}")), client, tls=server_tls) is False
    assert "localhost" in sni
