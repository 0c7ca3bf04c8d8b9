"""A catalogue of malformed inputs across the public surface: each fails clearly before any request or write.

One table, one row per input: the call (hook, trigger, sensor, operators, connections), the
exception class it must raise and a fragment of its message. After every row the emulator must
have received no request at all (``requests_total == 0``: nothing was sent, so no URL was built
from the input) and the test's folder must hold no file (nothing was written, so no path was
built from it either). Vendor task ids get the whole hostile set against every surface that takes
one: empty, whitespace, too long, ``/``, ``..``, ``?``, ``#``, ``%2F``, control characters.

Property tests complete the catalogue: ``tests/vendors/test_parsing_properties.py`` (any status or
create answer → a status or a documented error), ``tests/test_srt.py`` (any text → cues or the
documented error), and here, any bytes → a duration or None from ``storage.audio_duration``.
"""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from airflow_provider_tts.compat import AirflowNotFoundException
from airflow_provider_tts.exceptions import TtsConfigError, TtsError, TtsInvalidRequestError, error_from_event
from airflow_provider_tts.hooks.tts import TtsHook
from airflow_provider_tts.operators.tts import TtsAudioToStorageOperator, TtsSubmitOperator
from airflow_provider_tts.sensors.tts import TtsTaskSensor
from airflow_provider_tts.storage import audio_duration
from airflow_provider_tts.triggers.tts import TtsTaskTrigger
from tests.conftest import FIELDS, TEST_KEY
from tests.operators.conftest import ti_context
from tests.reliability.conftest import drive

GOOD_ID = "0b6f3c1e-5d2a-4e8f-9a7b-2c4d6e8f0a1b"


@dataclass
class Ctx:
    """What a row's call may use: the emulator, connection ids, the output folder."""

    emu: Any
    monkeypatch: pytest.MonkeyPatch
    out: Path
    _n: int = 0

    def conn(self, api: str, **fields: Any) -> str:
        """A connection to the emulator; ``fields`` override the JSON (``host``, ``password``, ``extra``...)."""
        self._n += 1
        conn_id = f"cat_{api}_{self._n}"
        base = {
            "conn_type": api,
            "host": self.emu.camb_base_url if api == "camb_ai" else self.emu.revid_base_url,
            "password": TEST_KEY,
            "extra": {"status_base_url": self.emu.revid_status_base_url} if api == "revid_tts" else {},
        }
        self.monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps({**base, **fields}))
        return conn_id


# ---------------------------------------------------------------------------------- surfaces


def hook_status(ctx: Ctx, api: str, task_id: Any, kind: str = "tts", **conn: Any) -> Any:
    return TtsHook(ctx.conn(api, **conn)).get_task_status(task_id, kind)


def hook_astatus(ctx: Ctx, api: str, task_id: Any, kind: str = "tts") -> Any:
    async def go() -> Any:
        hook = TtsHook(ctx.conn(api))
        try:
            return await hook.aget_task_status(task_id, kind)
        finally:
            await hook.aclose()

    return asyncio.run(go())


def trigger_run(ctx: Ctx, api: str, task_id: Any, kind: str = "tts", **kw: Any) -> Any:
    """Run the trigger; an ``error`` event becomes the exception the resumed task would raise."""
    events = asyncio.run(drive(TtsTaskTrigger(tts_conn_id=ctx.conn(api), tts_task_id=task_id, kind=kind, **kw)))
    assert len(events) == 1
    if events[0]["status"] == "error":
        raise error_from_event(events[0])
    return events[0]


def sensor(ctx: Ctx, api: str, task_id: Any, kind: str = "tts", **kw: Any) -> Any:
    kw.setdefault("deferrable", True)
    kw.setdefault("poke_interval", 0.05)
    return TtsTaskSensor(task_id="wait", tts_conn_id=ctx.conn(api), tts_task_id=task_id, kind=kind, **kw).execute({})


def download(ctx: Ctx, api: str, task_id: Any, kind: str = "tts", destination: Any = None, **kw: Any) -> Any:
    kw.setdefault("deferrable", False)
    op = TtsAudioToStorageOperator(
        task_id="download",
        tts_conn_id=ctx.conn(api),
        tts_task_id=task_id,
        kind=kind,
        destination=f"{ctx.out.as_uri()}/" if destination is None else destination,
        poll_interval=0.05,
        **kw,
    )
    return op.execute(ti_context())


class _Store(dict[str, Any]):
    def set(self, key: str, value: Any, **_: Any) -> None:
        self[key] = value


def submit(ctx: Ctx, api: str, kind: str, **fields: Any) -> Any:
    op = TtsSubmitOperator(task_id="submit", tts_conn_id=ctx.conn(api), kind=kind, **fields)
    return op.execute({"task_state_store": _Store()})


# ------------------------------------------------------------------------------------- rows


@dataclass(frozen=True)
class Row:
    id: str
    call: Callable[[Ctx], Any]
    error: type[BaseException]
    fragment: str
    #: What Airflow itself raises first on some minors, before the provider sees the input.
    airflow_refusal: tuple[type[BaseException], ...] = ()


ROWS: list[Row] = []


def row(id: str, error: type[BaseException], fragment: str) -> Callable[[Callable[[Ctx], Any]], None]:
    def add(call: Callable[[Ctx], Any]) -> None:
        ROWS.append(Row(id, call, error, fragment))

    return add


# Vendor task ids that must never reach a URL path or a file name.
HOSTILE_IDS: dict[str, Any] = {
    "empty": "",
    "space": " ",
    "whitespace": " \t\n",
    "leading-space": " abc",
    "trailing-space": "abc ",
    "inner-space": "a b",
    "too-long": "a" * 129,
    "slash": "a/b",
    "leading-slash": "/abc",
    "dotdot": "..",
    "traversal": "../../etc/passwd",
    "dotdot-segment": "abc/../def",
    "backslash": "a\\b",
    "query": "abc?x=1",
    "fragment": "abc#top",
    "pct-2F": "a%2Fb",
    "pct-dotdot": "%2e%2e",
    "newline": "abc\nHost: evil",
    "carriage-return": "abc\r",
    "nul": "abc\x00",
    "tab": "a\tb",
    "del": "a\x7fb",
    "fullwidth": "ａｂｃ",  # noqa: RUF001 - the point is a look-alike
    "semicolon": "a;b",
    "not-a-string": 12345,
    "none": None,
}

SURFACES: dict[str, Callable[[Ctx, Any], Any]] = {
    "hook.get_task_status": lambda c, t: hook_status(c, "camb_ai", t),
    "hook.aget_task_status": lambda c, t: hook_astatus(c, "revid_tts", t),
    "TtsTaskTrigger": lambda c, t: trigger_run(c, "revid_tts", t, "srt-to-speech"),
    "TtsTaskSensor": lambda c, t: sensor(c, "camb_ai", t, "text-to-sound"),
    "TtsAudioToStorageOperator": lambda c, t: download(c, "revid_tts", t),
}

for surface, call in SURFACES.items():
    for name, bad in HOSTILE_IDS.items():
        row(f"task-id/{name}/{surface}", TtsConfigError, "tts_task_id")(lambda c, call=call, bad=bad: call(c, bad))

# Connections: every one is refused when the hook resolves it, before its first request.
for api in ("camb_ai", "revid_tts"):
    for name, fields, fragment in [
        ("no-key", {"password": None}, "has no API key"),
        ("blank-key", {"password": "   "}, "has no API key"),
        ("unknown-extra", {"extra": {"headers": {"X-Debug": "1"}}}, "unknown extra 'headers'"),
        ("unknown-extra-proxy", {"extra": {"proxy": "http://proxy:3128"}}, "unknown extra 'proxy'"),
        ("extra-not-object", {"extra": "[1, 2]"}, "extra must be a JSON object"),
        ("ftp-host", {"host": "ftp://files.example/apis"}, "must be an http:// or https:// URL"),
        ("file-host", {"host": "file:///etc/passwd"}, "must be an http:// or https:// URL"),
        ("host-credentials", {"host": "http://user:pw@127.0.0.1:1/apis"}, "must not carry credentials"),
        ("host-query", {"host": "http://127.0.0.1:1/apis?debug=1"}, "must not have a query or fragment"),
        ("port-no-host", {"host": None, "port": 8080}, "sets a port but no host"),
        ("port-mismatch", {"host": "http://127.0.0.1:1234/apis", "port": 4321}, "disagree"),
        ("read-timeout-zero", {"extra": {"read_timeout": 0}}, "'read_timeout' must be a number"),
        ("read-timeout-text", {"extra": {"read_timeout": "soon"}}, "'read_timeout' must be a number"),
        ("max-retries-huge", {"extra": {"max_retries": 99}}, "'max_retries' must be an integer"),
        ("max-retries-fraction", {"extra": {"max_retries": 1.5}}, "'max_retries' must be an integer"),
        ("backoff-negative", {"extra": {"retry_backoff": -1}}, "'retry_backoff' must be a number"),
        ("max-characters-text", {"extra": {"max_characters": "lots"}}, "'max_characters' must be an integer"),
        ("max-credits-boolean", {"extra": {"max_credits": True}}, "'max_credits' must be a number"),
        ("price-negative", {"extra": {"credits_per_1000_characters": -1}}, "'credits_per_1000_characters' must be"),
        ("wrong-conn-type", {"conn_type": "http"}, "expected one of camb_ai, revid_tts"),
    ]:
        row(f"connection/{api}/{name}", TtsConfigError, fragment)(
            lambda c, api=api, fields=fields: hook_status(c, api, GOOD_ID, **fields)
        )
        if name == "extra-not-object":  # Airflow 3.0 does not read such a connection from the environment
            ROWS[-1] = replace(ROWS[-1], airflow_refusal=(AirflowNotFoundException,))
row("connection/camb_ai/status-base-url-is-revid-only", TtsConfigError, "unknown extra 'status_base_url'")(
    lambda c: hook_status(c, "camb_ai", GOOD_ID, extra={"status_base_url": c.emu.revid_status_base_url})
)
row("connection/revid_tts/status-base-url-not-http", TtsConfigError, "extra 'status_base_url'")(
    lambda c: hook_status(c, "revid_tts", GOOD_ID, extra={"status_base_url": "gopher://x/api"})
)
row("connection/undefined-conn-id", AirflowNotFoundException, "isn't defined")(
    lambda c: TtsHook("no_such_connection_xyz").get_task_status(GOOD_ID)
)
row("connection/empty-conn-id", TtsConfigError, "tts_conn_id must be a non-empty string")(
    lambda c: TtsHook("  ").get_task_status(GOOD_ID)
)
row("connection/unknown-retry-override", TtsConfigError, "unknown retry settings ['tries']")(
    lambda c: TtsHook(c.conn("camb_ai"), request_retry={"tries": 3}).get_task_status(GOOD_ID)
)

# Destinations: refused before the status poll.
for name, destination, fragment in [
    ("relative-path", "audio/out.wav", "has no scheme"),
    ("absolute-path", "/tmp/out.wav", "has no scheme"),
    ("windows-path", "C:\\audio\\out.wav", "has no scheme"),
    ("unregistered-scheme", "gopher://host/out.wav", "no filesystem is registered for scheme 'gopher'"),
    ("made-up-scheme", "tts-bucket://x/out.wav", "no filesystem is registered for scheme 'tts-bucket'"),
    ("empty", "", "destination rendered to ''"),
    ("blank", "   ", "destination rendered to"),
    ("not-a-string", 42, "destination rendered to 42"),
]:
    row(f"destination/{name}", TtsConfigError, fragment)(
        lambda c, destination=destination: download(c, "camb_ai", GOOD_ID, destination=destination)
    )

# Kinds a vendor does not have, on every surface that takes a kind.
for name, call, fragment in [
    ("hook/camb-srt", lambda c: hook_status(c, "camb_ai", GOOD_ID, "srt-to-speech"), "not supported by camb_ai"),
    ("hook/revid-sound", lambda c: hook_status(c, "revid_tts", GOOD_ID, "text-to-sound"), "not supported by revid_tts"),
    ("hook/made-up", lambda c: hook_status(c, "camb_ai", GOOD_ID, "speech"), "kind 'speech' is not supported"),
    ("trigger/revid-sound", lambda c: trigger_run(c, "revid_tts", GOOD_ID, "text-to-sound"), "not supported by"),
    ("sensor/camb-srt", lambda c: sensor(c, "camb_ai", GOOD_ID, "srt-to-speech"), "not supported by camb_ai"),
    ("download/camb-srt", lambda c: download(c, "camb_ai", GOOD_ID, "srt-to-speech"), "not supported by camb_ai"),
    ("download/made-up", lambda c: download(c, "camb_ai", GOOD_ID, "speech"), "kind 'speech' is not one of"),
    ("submit/camb-srt", lambda c: submit(c, "camb_ai", "srt-to-speech", text="hi"), "not supported by camb_ai"),
    ("submit/revid-sound", lambda c: submit(c, "revid_tts", "text-to-sound", prompt="rain"), "not supported by"),
    ("submit/made-up", lambda c: submit(c, "camb_ai", "speech", text="hi"), "kind 'speech' is not one of"),
]:
    row(f"kind/{name}", TtsConfigError, fragment)(call)

# Submit fields out of range or out of place: refused by the vendor's documented model, unpaid.
CAMB_TTS = FIELDS["camb_ai/tts"]
SUBTITLE = {"index": 1, "start": "00:00:00,000", "end": "00:00:01,000", "text": "Hello"}
for name, api, kind, fields, fragment in [
    ("camb-tts/no-language", "camb_ai", "tts", {"text": "hi", "voice_id": 1}, "language"),
    ("camb-tts/language-zero", "camb_ai", "tts", {**CAMB_TTS, "language": 0}, "language"),
    ("camb-tts/language-unknown-tag", "camb_ai", "tts", {**CAMB_TTS, "language": "en-xx"}, "nearest: 'en-us'"),
    ("camb-tts/voice-id-text", "camb_ai", "tts", {**CAMB_TTS, "voice_id": "Brian"}, "voice_id"),
    ("camb-tts/gender-5", "camb_ai", "tts", {**CAMB_TTS, "gender": 5}, "gender"),
    ("camb-tts/age-negative", "camb_ai", "tts", {**CAMB_TTS, "age": -1}, "age"),
    ("camb-tts/age-200", "camb_ai", "tts", {**CAMB_TTS, "age": 200}, "age"),
    ("camb-tts/revid-field-speed", "camb_ai", "tts", {**CAMB_TTS, "speed": 1.5}, "speed"),
    ("camb-sound/duration-30", "camb_ai", "text-to-sound", {"prompt": "rain", "duration": 30}, "duration"),
    ("camb-sound/duration-zero", "camb_ai", "text-to-sound", {"prompt": "rain", "duration": 0}, "duration"),
    ("camb-sound/audio-type", "camb_ai", "text-to-sound", {"prompt": "rain", "audio_type": "noise"}, "audio_type"),
    ("camb-sound/text-not-prompt", "camb_ai", "text-to-sound", {"text": "rain"}, "prompt"),
    ("revid-tts/speed-3", "revid_tts", "tts", {"text": "hi", "speed": 3}, "speed"),
    ("revid-tts/speed-0.1", "revid_tts", "tts", {"text": "hi", "speed": 0.1}, "speed"),
    ("revid-tts/pitch-40", "revid_tts", "tts", {"text": "hi", "pitch": 40}, "pitch"),
    ("revid-tts/pitch-minus-21", "revid_tts", "tts", {"text": "hi", "pitch": -21}, "pitch"),
    ("revid-tts/engine", "revid_tts", "tts", {"text": "hi", "engine": "polly"}, "engine"),
    ("revid-tts/webhook-ftp", "revid_tts", "tts", {"text": "hi", "webhook_url": "ftp://x/hook"}, "webhook_url"),
    ("revid-tts/voice-id-text", "revid_tts", "tts", {"text": "hi", "voice_id": "Brian"}, "voice_id"),
    ("revid-srt/no-source", "revid_tts", "srt-to-speech", {"voice_id": 1}, "exactly one of"),
    ("revid-srt/two-sources", "revid_tts", "srt-to-speech",
     {"subtitles": [SUBTITLE], "srt_url": "https://x/a.srt"}, "exactly one of"),
    ("revid-srt/empty-cues", "revid_tts", "srt-to-speech", {"subtitles": []}, "subtitles"),
    ("revid-srt/bad-cue-time", "revid_tts", "srt-to-speech",
     {"subtitles": [{**SUBTITLE, "start": "0:0:1,000"}]}, "start"),
    ("revid-srt/blank-cue-text", "revid_tts", "srt-to-speech", {"subtitles": [{**SUBTITLE, "text": "  "}]}, "text"),
    ("revid-srt/output-format", "revid_tts", "srt-to-speech",
     {"subtitles": [SUBTITLE], "output_format": "ogg"}, "output_format"),
    ("revid-srt/mode", "revid_tts", "srt-to-speech", {"subtitles": [SUBTITLE], "mode": "mix"}, "mode"),
    ("revid-srt/negative-silence", "revid_tts", "srt-to-speech",
     {"subtitles": [SUBTITLE], "add_silence": -1}, "add_silence"),
    ("revid-srt/srt-url-not-url", "revid_tts", "srt-to-speech", {"srt_url": "subtitles.srt"}, "srt_url"),
]:  # fmt: skip
    row(f"submit-field/{name}", TtsInvalidRequestError, fragment)(
        lambda c, api=api, kind=kind, fields=fields: submit(c, api, kind, **fields)
    )

# Malformed SRT text, parsed in the worker: the error names the line.
for name, srt, error, fragment in [
    ("timing-too-short", "1\n00:00 --> 00:01\nHello\n", TtsInvalidRequestError, "SRT line 2"),
    ("arrow-typo", "1\n00:00:00,000 -> 00:00:01,000\nHello\n", TtsInvalidRequestError, "SRT line 2"),
    ("index-not-number", "one\n00:00:00,000 --> 00:00:01,000\nHello\n", TtsInvalidRequestError, "SRT line 1"),
    ("ends-before-start", "1\n00:00:02,000 --> 00:00:01,000\nHello\n", TtsInvalidRequestError, "ends before"),
    ("cue-without-text", "1\n00:00:00,000 --> 00:00:01,000\n", TtsInvalidRequestError, "has no text"),
    ("no-timing-line", "1", TtsInvalidRequestError, "has no timing line"),
    ("minutes-60", "1\n00:60:00,000 --> 00:61:00,000\nHello\n", TtsInvalidRequestError, "SRT line 2"),
    ("second-cue-broken", "1\n00:00:00,000 --> 00:00:01,000\nHi\n\n2\n00:00:01,000 --> nope\nThere\n",
     TtsInvalidRequestError, "SRT line 6"),
    ("only-a-bom", "\ufeff\n \n", TtsInvalidRequestError, "contains no cues"),
    ("empty", "", TtsConfigError, "srt is empty"),
]:  # fmt: skip
    row(f"srt/{name}", error, fragment)(lambda c, srt=srt: submit(c, "revid_tts", "srt-to-speech", srt=srt))
ONE_CUE = "1\n00:00:00,000 --> 00:00:01,000\nHi\n"
row("srt/with-subtitles-too", TtsConfigError, "not both")(
    lambda c: submit(c, "revid_tts", "srt-to-speech", srt=ONE_CUE, subtitles=[SUBTITLE])
)

# Arguments refused when the DAG is parsed.
for name, call, fragment in [
    ("sensor/poke-interval-zero", lambda c: sensor(c, "camb_ai", GOOD_ID, poke_interval=0), "poll_interval"),
    ("sensor/max-errors-negative", lambda c: sensor(c, "camb_ai", GOOD_ID, max_consecutive_errors=-1),
     "max_consecutive_errors"),
    ("sensor/grace-text", lambda c: sensor(c, "camb_ai", GOOD_ID, not_found_grace="soon"), "not_found_grace"),
    ("trigger/poll-interval-nan", lambda c: trigger_run(c, "camb_ai", GOOD_ID, poll_interval=math.nan),
     "poll_interval"),
    ("trigger/poll-interval-inf", lambda c: trigger_run(c, "camb_ai", GOOD_ID, poll_interval=math.inf),
     "poll_interval"),
    ("trigger/slow-after-negative", lambda c: trigger_run(c, "camb_ai", GOOD_ID, slow_after=-1), "slow_after"),
    ("download/overwrite", lambda c: download(c, "camb_ai", GOOD_ID, overwrite="maybe"), "overwrite must be one of"),
    ("download/max-bytes-zero", lambda c: download(c, "camb_ai", GOOD_ID, max_bytes=0), "max_bytes"),
    ("download/chunk-bytes-tiny", lambda c: download(c, "camb_ai", GOOD_ID, chunk_bytes=10), "chunk_bytes"),
    ("submit/blank-text", lambda c: submit(c, "camb_ai", "tts", text=" \n", voice_id=1, language=1), "text is empty"),
    ("submit/blank-prompt", lambda c: submit(c, "camb_ai", "text-to-sound", prompt=""), "prompt is empty"),
]:  # fmt: skip
    row(f"argument/{name}", TtsConfigError, fragment)(call)


def test_the_catalogue_is_big_enough() -> None:
    assert len(ROWS) >= 50
    assert len({r.id for r in ROWS}) == len(ROWS)
    print(f"\nFIGURE bad-input catalogue: {len(ROWS)} rows, {len(HOSTILE_IDS)} hostile task ids x {len(SURFACES)} "
          f"surfaces")  # fmt: skip


def _files(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())


@pytest.mark.parametrize("case", ROWS, ids=[r.id for r in ROWS])
def test_bad_input_fails_clearly_before_any_request_or_write(
    emu: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, case: Row
) -> None:
    out = tmp_path / "out"
    ctx = Ctx(emu, monkeypatch, out)
    with pytest.raises((case.error, *case.airflow_refusal)) as info:
        case.call(ctx)
    if isinstance(info.value, case.error):
        assert case.fragment in str(info.value), str(info.value)
    assert TEST_KEY not in str(info.value)
    assert emu.stats()["requests_total"] == 0, emu.requests()
    assert _files(tmp_path) == []


# ------------------------------------------------------------- ids that pass cannot move anything


@pytest.mark.parametrize("task_id", ["a..b", "A:b-c_d.e", "x" * 128, "0", "run.2026-01-01T00:00:00"])
def test_accepted_ids_call_exactly_their_own_path_and_name_exactly_their_own_file(
    emu: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, task_id: str
) -> None:
    """What the id pattern lets through stays one path segment, and never names (or moves) the file.

    The file in a folder is named after the task instance, not the vendor's id (which used to be
    the name): whatever id arrives, the file is the same one.
    """
    ctx = Ctx(emu, monkeypatch, tmp_path / "out")
    status = hook_status(ctx, "camb_ai", task_id)  # unknown to the emulator: a 404, i.e. not found
    assert status.failure == "not_found"
    assert [r["path"] for r in emu.requests()] == [f"/apis/tts/{quote(task_id, safe='')}"]
    ctx.out.mkdir()
    op = TtsAudioToStorageOperator(
        task_id="download", tts_conn_id=ctx.conn("camb_ai"), tts_task_id=task_id, destination=f"{ctx.out.as_uri()}/"
    )
    real = emu.create_task("camb_ai", "tts", delay=0, audio_bytes=2048)
    done = TtsHook(ctx.conn("camb_ai")).get_task_status(real)
    forged = done.model_copy(update={"tts_task_id": task_id})  # the same audio, under the accepted id
    op.execute_complete(ti_context(), {"status": "success", "tts_task_id": task_id, "task_status": forged.to_xcom()})
    assert _files(tmp_path) == ["out/tts_dag-download.wav"]


def test_resumed_download_never_writes_outside_the_destination_folder(
    emu: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    ctx = Ctx(emu, monkeypatch, tmp_path / "out")
    ctx.out.mkdir()
    real = emu.create_task("revid_tts", "tts", delay=0, audio_bytes=2048)
    done = TtsHook(ctx.conn("revid_tts")).get_task_status(real)
    event = {"status": "success", "tts_task_id": real, "task_status": {**done.to_xcom(), "tts_task_id": "../escaped"}}
    op = TtsAudioToStorageOperator(
        task_id="download", tts_conn_id=ctx.conn("revid_tts"), tts_task_id=real, destination=f"{ctx.out.as_uri()}/"
    )
    with pytest.raises(TtsError, match=r"carries the status of '\.\./escaped'"):  # a forged event is refused
        op.execute_complete(ti_context(), event)
    assert [p for p in _files(tmp_path) if not p.startswith("out/")] == []


def test_trigger_with_unknown_retry_settings_ends_with_an_error_event(
    emu: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    ctx = Ctx(emu, monkeypatch, Path("unused"))
    trigger = TtsTaskTrigger(tts_conn_id=ctx.conn("camb_ai"), tts_task_id=GOOD_ID, request_retry={"tries": 3})
    (event,) = asyncio.run(drive(trigger))
    assert event["status"] == "error"
    assert "unknown retry settings" in event["message"]


# ------------------------------------------------------------------------------------ properties


@settings(max_examples=500, deadline=None)
@given(
    st.one_of(
        st.binary(max_size=128),
        st.builds(lambda rest: b"RIFF\x00\x00\x00\x00WAVE" + rest, st.binary(max_size=96)),
        st.builds(lambda rest: b"fLaC\x00" + rest, st.binary(max_size=64)),
    )
)
def test_audio_duration_of_any_bytes_is_a_non_negative_number_or_none(header: bytes) -> None:
    duration = audio_duration(header)
    assert duration is None or (isinstance(duration, float) and 0 <= duration < math.inf)
