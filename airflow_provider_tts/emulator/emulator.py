"""The :class:`Emulator`: lifecycle (thread or current loop) and the in-process Python API."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
from collections.abc import Callable
from types import TracebackType
from typing import Any

from aiohttp import web

from .audio import AudioRenderer
from .config import DEFAULT_API_KEY, EmulatorConfig, FaultConfig
from .control import op_configure, op_create_task, op_inject, op_script, op_set_faults
from .server import EmulatorServer
from .state import State


def _loop_factory(use_uvloop: bool) -> Callable[[], asyncio.AbstractEventLoop]:
    if use_uvloop:
        try:
            import uvloop
        except ImportError as exc:
            raise RuntimeError("use_uvloop=True but uvloop is not installed") from exc
        factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
        return factory
    return asyncio.new_event_loop


class Emulator:
    """Camb.ai and RevidAPI job APIs on one local address, with scripted outcomes and faults.

    Start it in a background thread (``start()``/``stop()`` or ``with Emulator() as emu:``) or on
    the running loop (``await emu.astart()``/``astop()`` or ``async with``). All other methods are
    thread-safe and may be called before, during or after serving.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        api_key: str = DEFAULT_API_KEY,
        config: EmulatorConfig | None = None,
        *,
        use_uvloop: bool = False,
    ) -> None:
        if not api_key:
            raise ValueError("api_key must be a non-empty string")
        self._host = host
        self._requested_port = port
        self._api_key = api_key
        self._state = State(config or EmulatorConfig())
        self._use_uvloop = use_uvloop
        self._server: EmulatorServer | None = None
        self._runner: web.AppRunner | None = None
        self._listener: asyncio.AbstractServer | None = None
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._url = ""
        self._port = 0

    # -- addresses ---------------------------------------------------------------------------

    @property
    def url(self) -> str:
        """``http://HOST:PORT`` once listening."""
        if not self._url:
            raise RuntimeError("the emulator is not running; call start() first")
        return self._url

    @property
    def host(self) -> str:
        return self._host

    @property
    def port(self) -> int:
        return self._port

    @property
    def api_key(self) -> str:
        return self._api_key

    @property
    def camb_base_url(self) -> str:
        """Host of a ``camb_ai`` connection."""
        return f"{self.url}/apis"

    @property
    def revid_base_url(self) -> str:
        """Host of a ``revid_tts`` connection (create calls)."""
        return f"{self.url}/paid"

    @property
    def revid_status_base_url(self) -> str:
        """``status_base_url`` extra of a ``revid_tts`` connection."""
        return f"{self.url}/api"

    @property
    def audio_base_url(self) -> str:
        """Where ``audio_url``/``file_url`` links point (the stand-in third-party storage host)."""
        if self._server is None:
            raise RuntimeError("the emulator is not running; call start() first")
        return self._server.audio_base_url

    @property
    def config(self) -> EmulatorConfig:
        return self._state.config

    @property
    def running(self) -> bool:
        return self._server is not None

    # -- lifecycle ---------------------------------------------------------------------------

    def _bind(self) -> socket.socket:
        infos = socket.getaddrinfo(self._host, self._requested_port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        family, kind, proto, _, address = infos[0]
        sock = socket.socket(family, kind, proto)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(address)
            sock.listen(1024)
            sock.setblocking(False)
        except OSError:
            sock.close()
            raise
        return sock

    async def _open(self) -> None:
        config = self._state.config
        renderer = AudioRenderer(
            config.audio_engine,
            config.sample_rate,
            config.max_audio_seconds,
            config.max_srt_seconds,
            cache_bytes=config.audio_cache_mb * 1024 * 1024,
        )
        server = EmulatorServer(self._state, self._api_key, renderer)
        runner = web.AppRunner(
            server.build_app(), access_log=None, handle_signals=False, shutdown_timeout=config.shutdown_timeout
        )
        try:
            await runner.setup()
            protocol_factory = runner.server
            assert protocol_factory is not None
            state = self._state

            def counting_factory() -> asyncio.BaseProtocol:
                # One call per accepted TCP connection: the accurate connection count.
                state.count_connection()
                return protocol_factory()

            sock = self._bind()
            try:
                listener = await asyncio.get_running_loop().create_server(counting_factory, sock=sock, backlog=1024)
            except BaseException:
                sock.close()
                raise
        except BaseException:
            await runner.cleanup()
            renderer.close()
            raise
        host, port = sock.getsockname()[:2]
        url_host = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(host, host)
        if ":" in url_host:
            url_host = f"[{url_host}]"
        server.url, server.host, server.port = f"http://{url_host}:{port}", url_host, port
        self._server, self._runner, self._listener = server, runner, listener
        self._url, self._port = server.url, port

    async def _close(self) -> None:
        server, runner, listener = self._server, self._runner, self._listener
        self._server = self._runner = self._listener = None
        self._url = ""
        if listener is not None:
            listener.close()
        if runner is not None:
            # Taken before cleanup, which forgets them. A graceful close waits for the write buffer
            # to drain, which never happens when the client stopped reading (a large download):
            # such sockets would leak, so whatever is still open afterwards is aborted.
            handlers = list(runner.server.connections) if runner.server is not None else []
            transports = [h.transport for h in handlers if h.transport is not None]
            await runner.cleanup()
            for transport in transports:
                transport.abort()
            await asyncio.sleep(0)
        if listener is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(listener.wait_closed(), timeout=2)
        if server is not None:
            await server.cancel_background()
            server.renderer.close()

    def start(self) -> Emulator:
        """Serve from a background thread with its own event loop; returns once listening."""
        if self._thread is not None or self._server is not None:
            raise RuntimeError("the emulator is already running")
        ready = threading.Event()
        failure: list[BaseException] = []
        factory = _loop_factory(self._use_uvloop)

        def serve() -> None:
            loop = factory()
            asyncio.set_event_loop(loop)
            try:
                try:
                    loop.run_until_complete(self._open())
                except BaseException as exc:
                    failure.append(exc)
                    return
                self._loop = loop
                ready.set()
                loop.run_forever()
                loop.run_until_complete(self._close())
                leftovers = asyncio.all_tasks(loop)
                for task in leftovers:
                    task.cancel()
                loop.run_until_complete(asyncio.gather(*leftovers, return_exceptions=True))
                loop.run_until_complete(loop.shutdown_asyncgens())
                loop.run_until_complete(loop.shutdown_default_executor())
            finally:
                self._loop = None
                asyncio.set_event_loop(None)
                loop.close()
                ready.set()

        thread = threading.Thread(target=serve, name="tts-emulator", daemon=True)
        self._thread = thread
        thread.start()
        ready.wait()
        if failure:
            thread.join()
            self._thread = None
            raise failure[0]
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """Stop serving, close every connection and join the thread (no-op if not started)."""
        thread, loop = self._thread, self._loop
        if thread is None:
            return
        if loop is not None:
            loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout)
        if thread.is_alive():
            raise RuntimeError("the emulator thread did not stop in time")
        self._thread = None

    async def astart(self) -> Emulator:
        """Serve on the running event loop (no thread)."""
        if self._thread is not None or self._server is not None:
            raise RuntimeError("the emulator is already running")
        await self._open()
        return self

    async def astop(self) -> None:
        if self._thread is not None:
            raise RuntimeError("started with start(); use stop()")
        await self._close()

    def __enter__(self) -> Emulator:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    async def __aenter__(self) -> Emulator:
        return await self.astart()

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.astop()

    # -- steering ----------------------------------------------------------------------------

    def create_task(
        self,
        api: str,
        kind: str,
        outcome: str = "success",
        delay: float | None = None,
        reason: str | None = None,
        audio_bytes: int | None = None,
        audio_format: str | None = None,
        *,
        text: str | None = None,
        duration: float | None = None,
        not_found_for: float | None = None,
        pending_polls: int | None = None,
        **variant_overrides: Any,
    ) -> str:
        """Create a task without a vendor request (not counted as a create); returns its task id.

        ``delay`` defaults to ``config.default_delay``; ``pending_polls=N`` keeps the first N status
        polls pending whatever the time (deterministic waits); ``text`` (speech) or ``duration``
        (text-to-sound) shape the audio; ``variant_overrides`` are the keys of
        ``spec.VARIANT_KEYS`` (e.g. ``wrap_array=True``).
        """
        data = {
            "api": api,
            "kind": kind,
            "outcome": outcome,
            "delay": delay,
            "reason": reason,
            "audio_bytes": audio_bytes,
            "audio_format": audio_format,
            "text": text,
            "duration": duration,
            "not_found_for": not_found_for,
            "pending_polls": pending_polls,
            **variant_overrides,
        }
        task = op_create_task(self._state, data)
        server = self._server
        if server is not None:
            server.prefetch_soon(task)
        return task.task_id

    def script_next(
        self,
        api: str,
        kind: str,
        outcome: str = "success",
        delay: float | None = None,
        reason: str | None = None,
        audio_bytes: int | None = None,
        audio_format: str | None = None,
        *,
        not_found_for: float | None = None,
        pending_polls: int | None = None,
        **variant_overrides: Any,
    ) -> int:
        """Queue behaviour for the next vendor create of (api, kind) (FIFO); returns the queue length.

        Markers in the submitted text override scripted values key by key.
        """
        data = {
            "api": api,
            "kind": kind,
            "outcome": outcome,
            "delay": delay,
            "reason": reason,
            "audio_bytes": audio_bytes,
            "audio_format": audio_format,
            "not_found_for": not_found_for,
            "pending_polls": pending_polls,
            **variant_overrides,
        }
        return op_script(self._state, data)

    def inject(self, kind: str, count: int = 1, endpoint: str = "status", *, api: str | None = None) -> None:
        """Make exactly the next ``count`` requests to ``endpoint`` fail as ``kind``.

        ``endpoint`` is ``create``, ``status``, ``result``, ``storage`` or ``any``; ``api``
        optionally restricts it to ``camb_ai`` or ``revid_tts``. Injections beat the random rate.
        """
        op_inject(self._state, {"kind": kind, "count": count, "endpoint": endpoint, "api": api})

    def set_faults(self, faults: FaultConfig | None = None, **fields: Any) -> FaultConfig:
        """Replace the random fault configuration (``FaultConfig`` or its fields as keywords)."""
        return op_set_faults(self._state, faults if faults is not None else fields)

    def configure(self, **changes: Any) -> EmulatorConfig:
        """Change global behaviour while running (e.g. ``revid_wrap_array=True``).

        ``audio_engine``, ``sample_rate``, ``max_*_seconds``, ``audio_cache_mb`` and
        ``shutdown_timeout`` take effect at the next start.
        """
        return op_configure(self._state, changes)

    def reset(self) -> None:
        """Forget tasks, scripts, injections, counters and logs; restore the start-up faults."""
        self._state.reset()

    # -- observing ---------------------------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        """Plain-dict counters: ``requests_total``, ``requests_by_endpoint``, ``requests_by_status``,
        ``max_concurrent_requests`` (the most vendor requests it was handling at once),
        ``faults_by_kind``, ``creates`` (api -> kind -> n), ``polls_by_task``, ``connections``,
        ``storage_requests_with_api_key``, ``storage_log`` and more (same as ``GET /_emulator/stats``);
        while running also ``audio`` (renders done and under way, the render cache; ``background``:
        renders started at create and not yet done).
        """
        server = self._server
        return self._state.stats() if server is None else server.stats()

    def requests(self, limit: int | None = None) -> list[dict[str, Any]]:
        """The most recent vendor requests (bounded by ``config.request_log_size``)."""
        return self._state.request_log(limit)

    def storage_requests(self) -> list[dict[str, Any]]:
        """Recent storage requests with ``api_key_present`` and ``api_key``."""
        return self._state.storage_log()

    def storage_key_leaks(self) -> list[dict[str, Any]]:
        """Storage requests that carried an ``x-api-key`` header (should always be empty)."""
        return [entry for entry in self._state.storage_log() if entry["api_key_present"]]

    def task_info(self, task_id: str) -> dict[str, Any] | None:
        """Phase, spec, poll count and the create body as received, or ``None``."""
        task = self._state.task(task_id)
        return None if task is None else task.info(self._state.config)

    def end_pending(self, *task_ids: str) -> None:
        """Let these tasks reach their outcome at their next poll, whatever their ``delay``.

        For tests that must hold tasks pending until something else has happened (a process killed,
        every wait deferred) on a machine whose speed they cannot know: create with a long delay,
        then end the wait when the test is ready. ``pending_polls`` still applies.
        """
        unknown = [task_id for task_id in task_ids if not self._state.end_pending(task_id)]
        if unknown:
            raise KeyError(f"no emulator task with id {', '.join(unknown)}")

    def streams(self) -> dict[str, int]:
        """``{text: /tts-stream answers sent whole}``: a stream creates no task, so this is its create count."""
        return self._state.streams()

    def tasks(self) -> list[dict[str, Any]]:
        config = self._state.config
        return [task.info(config) for task in self._state.tasks()]
