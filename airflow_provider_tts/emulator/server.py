"""The aiohttp application: both vendors' endpoints, the storage host and the control API.

URL layout (one address stands in for every vendor host)::

    POST /apis/tts                          Camb.ai create TTS          -> {"task_id"}
    GET  /apis/tts/{task_id}                Camb.ai TTS status
    GET  /apis/tts-result/{run_id}          Camb.ai TTS result (?output_type=raw_bytes|file_url)
    POST /apis/text-to-sound                Camb.ai create text-to-sound
    GET  /apis/text-to-sound/{task_id}      Camb.ai text-to-sound status
    GET  /apis/text-to-sound-result/{run_id}
    POST /apis/tts-stream                   Camb.ai streaming TTS: the body is the audio (chunked)
    POST /paid/text-to-speech               RevidAPI create TTS
    POST /paid/srt-to-speech/merge          RevidAPI create SRT-to-speech (V1 subtitles or V2 srt_url)
    GET  /api/get/{task_id}                 RevidAPI status (both kinds)
    GET  /storage/revid/{task_id}.wav       "third-party" storage host: Revid audio_url
    GET  /storage/camb/{run_id}.{flac|wav}  pre-signed Camb file_url (expiring token in the query)
    *    /_emulator/...                     control API (no key, never faulted; see control.py)

Every vendor request goes through one wrapper that counts it, applies faults *before* the handler
runs, and records the status, so accounting stays in one place and costs two short lock holds.
"""

from __future__ import annotations

import array
import asyncio
import dataclasses
import hmac
import json
import logging
import math
import os
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from .audio import AudioRenderer, AudioSource, SizedWav
from .config import CAMB, REVID
from .faults import error_body, json_response, respond_with_fault
from .spec import SpecError, markers_in, strip_markers
from .state import NOT_FOUND, PENDING, SUCCESS, UNKNOWN, State, Task
from .vendors import (
    camb_source,
    camb_stream_credits,
    camb_stream_format,
    revid_source,
    validate_camb_sound,
    validate_camb_stream,
    validate_camb_tts,
    validate_revid_srt,
    validate_revid_tts,
)

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

AUDIO_TYPES = {"flac": "audio/flac", "wav": "audio/wav"}
_REVID_FIELDS = {
    "create_response": "revid_create_response",
    "status_http": "revid_status_http",
    "wrap_array": "revid_wrap_array",
    "result_key": "revid_result_key",
    "duration_key": "revid_duration_key",
    "status_synonyms": "revid_status_synonyms",
    "unknown_value": "revid_unknown_status",
}
_CAMB_TERMINAL = {"error": "ERROR", "timeout": "TIMEOUT", "payment_required": "PAYMENT_REQUIRED"}
_CAMB_MESSAGES = {
    "error": "Task failed during processing",
    "timeout": "Task processing exceeded the allowed time",
    "payment_required": "Insufficient credits for this operation",
}
#: Size of each chunk of a ``/tts-stream`` body (the emulator writes it as a real stream).
STREAM_CHUNK_BYTES = 16 * 1024
_EXPIRES = "X-Emu-Expires"
_SIGNATURE = "X-Emu-Signature"


def _dumps(payload: object) -> bytes:
    return json.dumps(payload, separators=(",", ":")).encode()


def _json(payload: object, status: int = 200) -> web.Response:
    return web.Response(status=status, body=_dumps(payload), content_type="application/json")


def _json_content_type(request: web.Request) -> bool:
    """Missing or JSON content types are parsed as JSON; a form post is a client bug worth a 422."""
    if "Content-Type" not in request.headers:
        return True
    ctype = request.content_type
    return ctype == "application/json" or ctype.endswith("+json")


async def _read_json(request: web.Request) -> tuple[Any, str | None]:
    if not _json_content_type(request):
        return None, f"expected a JSON body, got Content-Type {request.content_type}"
    raw = await request.read()
    try:
        return json.loads(raw), None
    except (ValueError, UnicodeDecodeError) as exc:
        return None, f"JSON decode error: {exc}"


def pcm_as(s16le: bytes, fmt: str) -> bytes:
    """16-bit little-endian mono samples as the raw ``pcm_*`` format asked for."""
    samples = array.array("h")
    samples.frombytes(s16le)
    if sys.byteorder == "big":
        samples.byteswap()
    out: array.array[Any]
    if fmt.startswith("pcm_s16"):
        out = samples
    elif fmt.startswith("pcm_s32"):
        out = array.array("i", (v << 16 for v in samples))
    else:
        out = array.array("f", (v / 32768.0 for v in samples))
    little = fmt.endswith("le")
    if (sys.byteorder == "little") != little:
        out.byteswap()
    return out.tobytes()


class EmulatorServer:
    """Request handlers bound to one :class:`State`, API key and audio renderer."""

    def __init__(self, state: State, api_key: str, renderer: AudioRenderer) -> None:
        self.state = state
        self.api_key = api_key
        self.renderer = renderer
        self.url = ""
        self.host = ""
        self.port = 0
        self._secret = os.urandom(16)
        self._background: set[asyncio.Future[Any]] = set()
        self.loop: asyncio.AbstractEventLoop | None = None

    # -- application -------------------------------------------------------------------------

    def build_app(self) -> web.Application:
        from .control import add_control_routes

        self.loop = asyncio.get_running_loop()
        app = web.Application(client_max_size=8 * 1024 * 1024)
        r = app.router
        wrap = self._wrap
        r.add_post("/apis/tts", wrap("create", CAMB, lambda q: self.camb_create(q, "tts")))
        r.add_get("/apis/tts/{task_id}", wrap("status", CAMB, lambda q: self.camb_status(q, "tts")))
        r.add_get("/apis/tts-result/{run_id}", wrap("result", CAMB, lambda q: self.camb_result(q, "tts")))
        r.add_post("/apis/text-to-sound", wrap("create", CAMB, lambda q: self.camb_create(q, "text-to-sound")))
        r.add_get("/apis/text-to-sound/{task_id}", wrap("status", CAMB, lambda q: self.camb_status(q, "text-to-sound")))
        r.add_get(
            "/apis/text-to-sound-result/{run_id}", wrap("result", CAMB, lambda q: self.camb_result(q, "text-to-sound"))
        )
        r.add_post("/apis/tts-stream", wrap("stream", CAMB, self.camb_tts_stream))
        r.add_post("/paid/text-to-speech", wrap("create", REVID, lambda q: self.revid_create(q, "tts")))
        r.add_post("/paid/srt-to-speech/merge", wrap("create", REVID, lambda q: self.revid_create(q, "srt-to-speech")))
        r.add_get("/api/get/{task_id}", wrap("status", REVID, self.revid_status))
        r.add_get("/storage/revid/{name}", wrap("storage", REVID, self.storage_revid))
        r.add_get("/storage/camb/{name}", wrap("storage", CAMB, self.storage_camb))
        add_control_routes(app, self)
        r.add_route("*", "/{tail:.*}", wrap("other", "", self.not_found))
        return app

    def _wrap(self, endpoint: str, api: str, handler: Handler) -> Handler:
        state = self.state

        async def wrapped(request: web.Request) -> web.StreamResponse:
            headers = request.headers
            api_key = headers.get("x-api-key")
            if endpoint == "storage":
                state.record_storage(request.method, request.path_qs, api_key, "Authorization" in headers)
            poll_id = request.match_info.get("task_id") if endpoint == "status" else None
            fault = state.begin(endpoint, api, poll_id)
            status: int | str = "error"
            try:
                if fault is not None and fault != "slow":
                    resp, status = await respond_with_fault(request, fault, api, endpoint, state.config.faults)
                    return resp
                if fault == "slow":
                    # Take the whole request first: the server has it, then dawdles; a client that
                    # gives up meanwhile does not stop a slow create from creating.
                    await request.read()
                    state.hold(endpoint)
                    await asyncio.sleep(state.config.faults.slow_seconds)
                resp = await handler(request)
                status = resp.status
                return resp
            except web.HTTPException as exc:
                status = exc.status
                raise
            except ConnectionError:
                # The client went away mid-request; answering is pointless, logging it is noise.
                status = "client_disconnected"
                return web.Response(status=499)
            except asyncio.CancelledError:
                status = "cancelled"
                raise
            finally:
                state.finish(request.method, request.path_qs, endpoint, status, fault, api_key is not None)

        return wrapped

    async def not_found(self, request: web.Request) -> web.StreamResponse:
        return _json({"detail": "Not Found"}, 404)

    def spawn(self, coro: Awaitable[Any]) -> None:
        """Run ``coro`` in the background, keeping a reference so it is not garbage collected."""
        future = asyncio.ensure_future(coro)
        self._background.add(future)
        future.add_done_callback(self._background_done)

    def _background_done(self, future: asyncio.Future[Any]) -> None:
        self._background.discard(future)
        if not future.cancelled() and future.exception() is not None:
            log.warning("background audio rendering failed: %r", future.exception())

    def stats(self) -> dict[str, Any]:
        """The state's counters plus ``audio``: the renderer's (see ``AudioRenderer.stats``) and
        ``background``, audio renders started at create (``prefetch_soon``) and not yet done.

        A benchmark waits for ``background`` to reach 0 before it times downloads, so they do not
        queue behind renders of tasks created earlier.
        """
        return {**self.state.stats(), "audio": {**self.renderer.stats(), "background": len(self._background)}}

    async def cancel_background(self) -> None:
        for future in list(self._background):
            future.cancel()
        if self._background:
            await asyncio.gather(*self._background, return_exceptions=True)

    # -- helpers -----------------------------------------------------------------------------

    @property
    def audio_base_url(self) -> str:
        template = self.state.config.audio_base_url
        if template is None:
            return self.url
        return template.replace("{host}", self.host).replace("{port}", str(self.port)).rstrip("/")

    def _camb_auth(self, request: web.Request) -> web.Response | None:
        key = request.headers.get("x-api-key")
        if key == self.api_key:
            return None
        message = "Missing API key (x-api-key header)" if key is None else "Invalid API key"
        if self.state.config.camb_auth_error_shape == "error":
            return _json({"error": message, "status": 401}, 401)
        return _json({"detail": message}, 401)

    def _revid_denied(self, request: web.Request, *, required: bool) -> web.Response | None:
        key = request.headers.get("x-api-key")
        if key == self.api_key or (key is None and not required):
            return None
        message = "Missing API key (x-api-key header)" if key is None else "Invalid API key"
        return json_response(401, error_body(REVID, 401, message))

    def _variant(self, task: Task | None, name: str) -> Any:
        if task is not None:
            value = task.spec.variant(name)
            if value is not None:
                return value
        return getattr(self.state.config, _REVID_FIELDS[name])

    async def duration_of(self, task: Task) -> float:
        """The real duration of the task's audio (renders it once, then cached on the task)."""
        if task.duration is None:
            if task.spec.audio_bytes is not None:
                task.duration = SizedWav(task.spec.audio_bytes, self.renderer.rate).duration
            else:
                task.duration = (await self.renderer.pcm(task.source)).duration
        return task.duration

    def _camb_format(self, task: Task) -> str:
        if task.spec.audio_bytes is not None:
            return "wav"
        if task.spec.audio_format is not None:
            return task.spec.audio_format
        return self.state.config.camb_tts_format if task.kind == "tts" else "wav"

    def prefetch_soon(self, task: Task) -> None:
        """Render a task's audio in the background (callable from any thread) if it will succeed.

        Then neither the first "completed" status (which reports the duration) nor the download
        waits for synthesis.
        """
        if task.spec.outcome in ("success", "late_visible", "unknown_status") and self.loop is not None:
            self.loop.call_soon_threadsafe(lambda: self.spawn(self._prefetch(task)))

    async def _prefetch(self, task: Task) -> None:
        if task.spec.audio_bytes is None:
            fmt = self._camb_format(task) if task.api == CAMB else "wav"
            await self.renderer.encoded(task.source, fmt)
        await self.duration_of(task)

    def _sign(self, path: str, expires: str) -> str:
        return hmac.new(self._secret, f"{path}\n{expires}".encode(), "sha256").hexdigest()[:32]

    def presign(self, path: str, ttl: float) -> str:
        """A storage URL that stops working ``ttl`` seconds from now."""
        # Truncated, never rounded up, so a ttl of 0 is already expired when the URL is used.
        expires = f"{math.floor((time.time() + ttl) * 1000) / 1000:.3f}"
        return f"{self.audio_base_url}{path}?{_EXPIRES}={expires}&{_SIGNATURE}={self._sign(path, expires)}"

    def _storage_error(self, status: int, code: str, message: str) -> web.Response:
        if self.state.config.storage_error_body == "json":
            return _json({"error": code, "message": message}, status)
        body = (
            f'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{code}</Code><Message>{message}</Message></Error>\n'
        )
        return web.Response(status=status, text=body, content_type="application/xml")

    def _check_signature(self, request: web.Request) -> web.Response | None:
        expires = request.query.get(_EXPIRES)
        signature = request.query.get(_SIGNATURE)
        if not expires or not signature or not hmac.compare_digest(signature, self._sign(request.path, expires)):
            return self._storage_error(403, "AccessDenied", "Request signature is missing or does not match")
        try:
            deadline = float(expires)
        except ValueError:
            return self._storage_error(403, "AccessDenied", "Malformed expiry")
        if time.time() >= deadline:
            return self._storage_error(403, "AccessDenied", "Request has expired")
        return None

    async def send_audio(self, request: web.Request, task: Task, fmt: str) -> web.StreamResponse:
        """The task's audio with a correct Content-Length; sized WAVs stream from a repeated block."""
        if task.spec.audio_bytes is not None:
            wav = SizedWav(task.spec.audio_bytes, self.renderer.rate)
            resp = web.StreamResponse(headers={"Content-Type": AUDIO_TYPES["wav"]})
            resp.content_length = wav.total
            await resp.prepare(request)
            if request.method != "HEAD":
                for chunk in wav.chunks():
                    await resp.write(chunk)
            await resp.write_eof()
            return resp
        data = await self.renderer.encoded(task.source, fmt)
        return web.Response(body=data, content_type=AUDIO_TYPES[fmt])

    # -- Camb.ai -----------------------------------------------------------------------------

    async def camb_create(self, request: web.Request, kind: str) -> web.StreamResponse:
        denied = self._camb_auth(request)
        if denied is not None:
            return denied
        body, problem = await _read_json(request)
        if problem is not None:
            return _json({"detail": [{"type": "json_invalid", "loc": ["body", 0], "msg": problem, "input": {}}]}, 422)
        errors = validate_camb_tts(body) if kind == "tts" else validate_camb_sound(body)
        if errors:
            return _json({"detail": errors}, 422)
        field = "text" if kind == "tts" else "prompt"
        try:
            task = self.state.create_from_request(CAMB, kind, markers_in(body), camb_source(kind, body), body, None)
        except SpecError as exc:
            return _json(
                {
                    "detail": [
                        {
                            "type": "value_error",
                            "loc": ["body", field],
                            "msg": f"Value error, invalid emulator marker: {exc}",
                            "input": body.get(field),
                        }
                    ]
                },
                422,
            )
        self.prefetch_soon(task)
        return _json({"task_id": task.task_id})

    async def camb_status(self, request: web.Request, kind: str) -> web.StreamResponse:
        denied = self._camb_auth(request)
        if denied is not None:
            return denied
        task = self.state.task(request.match_info["task_id"])
        if task is None or task.api != CAMB or task.kind != kind:
            return _json({"detail": "Task not found"}, 404)
        config = self.state.config
        phase = task.phase(config)
        if phase == NOT_FOUND:
            return _json({"detail": "Task not found"}, 404)
        if phase == PENDING:
            return _json({"status": "PENDING", "run_id": None})
        if phase == UNKNOWN:
            unknown = task.spec.variant("unknown_value") or config.camb_unknown_status
            return _json({"status": unknown, "run_id": None})
        if phase == SUCCESS:
            return _json({"status": "SUCCESS", "run_id": task.run_id})
        body: dict[str, Any] = {"status": _CAMB_TERMINAL[phase], "run_id": None}
        if phase == "error":
            body["exception_reason"] = task.spec.reason or "INTERNAL_ERROR"
            body["message"] = _CAMB_MESSAGES[phase]
        elif task.spec.reason:
            body["exception_reason"] = task.spec.reason
            body["message"] = _CAMB_MESSAGES[phase]
        return _json(body)

    async def camb_result(self, request: web.Request, kind: str) -> web.StreamResponse:
        denied = self._camb_auth(request)
        if denied is not None:
            return denied
        raw_run = request.match_info["run_id"]
        output_type = request.query.get("output_type", "raw_bytes")
        errors = []
        try:
            run_id = int(raw_run)
        except ValueError:
            run_id = -1
            errors.append(
                {
                    "type": "int_parsing",
                    "loc": ["path", "run_id"],
                    "msg": "Input should be a valid integer, unable to parse string as an integer",
                    "input": raw_run,
                }
            )
        if output_type not in ("raw_bytes", "file_url"):
            errors.append(
                {
                    "type": "enum",
                    "loc": ["query", "output_type"],
                    "msg": "Input should be 'raw_bytes' or 'file_url'",
                    "input": output_type,
                }
            )
        if errors:
            return _json({"detail": errors}, 422)
        task = self.state.run(run_id)
        if task is None:
            return _json({"detail": "Run not found"}, 404)
        if task.kind != kind:
            wanted = "text-to-speech" if kind == "tts" else "text-to-sound"
            return _json({"detail": f"Run {run_id} is not a {wanted} run"}, 400)
        if task.phase(self.state.config) != SUCCESS:
            return _json({"detail": "Run not found"}, 404)
        fmt = self._camb_format(task)
        if output_type == "file_url" or self.state.config.camb_result_as_file_url:
            key = task.spec.variant("url_key")
            if key is None:
                config = self.state.config
                key = config.camb_tts_url_key if kind == "tts" else config.camb_sound_url_key
            url = self.presign(f"/storage/camb/{run_id}.{fmt}", self.state.config.presigned_url_ttl)
            return _json({key: url})
        return await self.send_audio(request, task, fmt)

    async def camb_tts_stream(self, request: web.Request) -> web.StreamResponse:
        """``POST /tts-stream``: validate, then stream the audio in the requested format, chunked.

        mp3 and adts cannot be encoded here; they are served as WAV with ``Content-Type:
        audio/wav`` (a client must trust the header, as it must for ``/tts-result``). ``pcm_*``
        formats are raw samples converted from the 16-bit mono render.
        """
        denied = self._camb_auth(request)
        if denied is not None:
            return denied
        body, problem = await _read_json(request)
        if problem is not None:
            return _json({"detail": [{"type": "json_invalid", "loc": ["body", 0], "msg": problem, "input": {}}]}, 422)
        errors = validate_camb_stream(body)
        if errors:
            return _json({"detail": errors}, 422)
        fmt = camb_stream_format(body)
        source = AudioSource("speech", text=strip_markers(body["text"]))
        if fmt in ("wav", "flac"):
            data, content_type = await self.renderer.encoded(source, fmt), AUDIO_TYPES[fmt]
        elif fmt.startswith("pcm_"):
            data, content_type = pcm_as((await self.renderer.pcm(source)).data, fmt), "audio/pcm"
        else:
            data, content_type = await self.renderer.encoded(source, "wav"), AUDIO_TYPES["wav"]
        resp = web.StreamResponse(
            headers={"Content-Type": content_type, "X-Credits-Required": str(camb_stream_credits(body))}
        )
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        view = memoryview(data)
        for start in range(0, len(data), STREAM_CHUNK_BYTES):
            await resp.write(view[start : start + STREAM_CHUNK_BYTES])
        await resp.write_eof()
        self.state.count_stream(str(body["text"]))
        return resp

    # -- RevidAPI ----------------------------------------------------------------------------

    def _revid_invalid(self, errors: list[dict[str, Any]]) -> web.Response:
        status = self.state.config.revid_invalid_status
        summary = "; ".join(f"{e['field']}: {e['message']}" for e in errors)
        return _json(
            {"code": status, "status": "error", "message": f"Validation failed: {summary}", "errors": errors}, status
        )

    def _revid_audio_url(self, task: Task) -> str:
        path = f"/storage/revid/{task.task_id}.wav"
        ttl = self.state.config.revid_url_ttl
        return f"{self.audio_base_url}{path}" if ttl is None else self.presign(path, ttl)

    def _revid_reply(self, task: Task | None, body: dict[str, Any]) -> web.Response:
        status = body["code"] if self._variant(task, "status_http") == "mirror" else 200
        payload: object = [body] if self._variant(task, "wrap_array") else body
        return _json(payload, status)

    async def _revid_completed(self, task: Task, code: int = 200) -> dict[str, Any]:
        synonyms = self._variant(task, "status_synonyms")
        result = {
            "audio_url": self._revid_audio_url(task),
            self._variant(task, "duration_key"): await self.duration_of(task),
        }
        return {
            "code": code,
            "task_id": task.task_id,
            "status": "success" if synonyms else "completed",
            self._variant(task, "result_key"): result,
            "message": "success",
        }

    async def revid_create(self, request: web.Request, kind: str) -> web.StreamResponse:
        denied = self._revid_denied(request, required=True)
        if denied is not None:
            return denied
        body, problem = await _read_json(request)
        if problem is not None:
            return self._revid_invalid([{"field": "body", "message": problem}])
        errors = validate_revid_tts(body) if kind == "tts" else validate_revid_srt(body)
        if errors:
            return self._revid_invalid(errors)
        try:
            task = self.state.create_from_request(
                REVID, kind, markers_in(body), revid_source(kind, body), body, body.get("id")
            )
        except SpecError as exc:
            return self._revid_invalid([{"field": "emulator marker", "message": str(exc)}])
        shape = self._variant(task, "create_response")
        if shape == "immediate" and task.spec.outcome == "success":
            task.spec = dataclasses.replace(task.spec, delay=0.0)
            reply = await self._revid_completed(task)
            reply["id"] = task.caller_id
            return self._revid_reply(task, reply)
        self.prefetch_soon(task)
        reply = {"code": 202, "task_id": task.task_id, "id": task.caller_id, "message": "processing"}
        status = 202 if self._variant(task, "status_http") == "mirror" else 200
        return _json([reply] if shape == "array" else reply, status)

    async def revid_status(self, request: web.Request) -> web.StreamResponse:
        denied = self._revid_denied(request, required=self.state.config.require_key_on_status)
        if denied is not None:
            return denied
        task_id = request.match_info["task_id"]
        task = self.state.task(task_id)
        if task is not None and task.api != REVID:
            task = None
        phase = NOT_FOUND if task is None else task.phase(self.state.config)
        if phase == NOT_FOUND:
            return self._revid_reply(
                task, {"code": 404, "task_id": task_id, "status": "not_found", "message": "Task not found"}
            )
        assert task is not None
        if phase == PENDING:
            return self._revid_reply(
                task, {"code": 202, "task_id": task_id, "status": "processing", "message": "Task is being processed"}
            )
        if phase == UNKNOWN:
            return self._revid_reply(
                task,
                {
                    "code": 202,
                    "task_id": task_id,
                    "status": self._variant(task, "unknown_value"),
                    "message": "Task is waiting in the queue",
                },
            )
        if phase == SUCCESS:
            return self._revid_reply(task, await self._revid_completed(task))
        return self._revid_reply(
            task,
            {
                "code": 500,
                "task_id": task_id,
                "status": "error" if self._variant(task, "status_synonyms") else "failed",
                "message": "Task processing failed",
                "error": task.spec.reason or "TTS engine failed to generate audio",
            },
        )

    # -- storage -----------------------------------------------------------------------------

    async def storage_revid(self, request: web.Request) -> web.StreamResponse:
        if self.state.config.revid_url_ttl is not None:
            denied = self._check_signature(request)
            if denied is not None:
                return denied
        name = request.match_info["name"]
        task = self.state.task(name[:-4]) if name.endswith(".wav") else None
        if task is None or task.api != REVID or task.phase(self.state.config) != SUCCESS:
            return self._storage_error(404, "NoSuchKey", "The specified key does not exist.")
        return await self.send_audio(request, task, "wav")

    async def storage_camb(self, request: web.Request) -> web.StreamResponse:
        denied = self._check_signature(request)
        if denied is not None:
            return denied
        stem, _, ext = request.match_info["name"].partition(".")
        task = self.state.run(int(stem)) if stem.isdigit() else None
        if task is None or task.phase(self.state.config) != SUCCESS or ext != self._camb_format(task):
            return self._storage_error(404, "NoSuchKey", "The specified key does not exist.")
        return await self.send_audio(request, task, ext)
