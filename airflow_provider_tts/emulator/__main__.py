"""Command line: ``python -m airflow_provider_tts.emulator``.

Serves until SIGINT/SIGTERM and exits 0, so it can run beside Airflow processes in integration tests
and benchmarks. The first line printed (flushed at once) is ``TTS emulator listening on URL``, which
scripts wait for before connecting; then ready-to-paste ``airflow connections add`` commands and
``AIRFLOW_CONN_*`` lines for both connection types, pointing at this emulator.

The default port is :data:`DEFAULT_PORT` (8739), chosen because nothing common listens there:
Airflow itself uses 8080 (api-server), 8793/8794 (log servers), 8974 (scheduler health) and 5555
(Flower); 8765 (the usual "free" pick) is AnkiConnect's and many WebSocket examples'. ``--port 0``
picks a free port, which tests and scripts running several emulators use.
"""

from __future__ import annotations

import argparse
import asyncio
import errno
import json
import shlex
import signal
import sys
from collections.abc import Callable, Sequence
from typing import Any

from .config import (
    AUDIO_ENGINES,
    CREATE_RESPONSES,
    DEFAULT_API_KEY,
    DURATION_KEYS,
    FAULT_ENDPOINTS,
    RESULT_KEYS,
    STATUS_HTTP,
    TRANSIENT_FAULT_KINDS,
    URL_KEYS,
    ConfigError,
    EmulatorConfig,
    FaultConfig,
)
from .emulator import Emulator

#: Default listening port; see the module docstring for why this one.
DEFAULT_PORT = 8739

#: The provider's public connection types and default connection ids (``connection.DEFAULT_CONN_IDS``;
#: repeated here because the emulator imports nothing from the provider).
_CONN_IDS = {"camb_ai": "camb_ai_default", "revid_tts": "revid_tts_default"}


def connection_lines(emulator: Emulator) -> list[str]:
    """Shell lines that define both connections against ``emulator``, ready to paste.

    Two forms, use either: ``airflow connections add`` (stored in the metadata database) or
    ``export AIRFLOW_CONN_...`` (environment variables, read by every Airflow process started from
    that shell). The key printed is the emulator's own, not a vendor secret.
    """
    conns: dict[str, dict[str, Any]] = {
        "camb_ai": {"conn_type": "camb_ai", "host": emulator.camb_base_url, "password": emulator.api_key},
        "revid_tts": {
            "conn_type": "revid_tts",
            "host": emulator.revid_base_url,
            "password": emulator.api_key,
            "extra": {"status_base_url": emulator.revid_status_base_url},
        },
    }
    lines = ["# Airflow connections for this emulator (paste one of the two forms):"]
    for conn_type, conn in conns.items():
        args = ["airflow", "connections", "add", _CONN_IDS[conn_type], "--conn-type", conn_type]
        args += ["--conn-host", str(conn["host"]), "--conn-password", str(conn["password"])]
        if "extra" in conn:
            args += ["--conn-extra", json.dumps(conn["extra"])]
        lines.append(shlex.join(args))
    for conn_type, conn in conns.items():
        lines.append(f"export AIRFLOW_CONN_{_CONN_IDS[conn_type].upper()}={shlex.quote(json.dumps(conn))}")
    return lines


def _csv(value: str) -> list[str]:
    return [part.strip() for part in value.split(",") if part.strip()]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m airflow_provider_tts.emulator",
        description=(
            "Local emulator of the Camb.ai and RevidAPI text-to-speech job APIs. "
            f"Every vendor endpoint requires the header x-api-key (default key: {DEFAULT_API_KEY!r}). "
            "Camb.ai base URL: URL/apis; RevidAPI: URL/paid (create) and URL/api (status); "
            "control API: URL/_emulator/."
        ),
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument(
        "--port",
        type=int,
        default=DEFAULT_PORT,
        help=f"port to bind; 0 picks a free port (default {DEFAULT_PORT}, which Airflow does not use)",
    )
    parser.add_argument("--api-key", default=DEFAULT_API_KEY, help=f"accepted x-api-key (default {DEFAULT_API_KEY})")
    parser.add_argument("--delay", type=float, default=2.0, help="seconds a task stays pending (default 2.0)")
    parser.add_argument(
        "--camb-tts-format",
        choices=("flac", "wav"),
        default="flac",
        help="format of Camb.ai /tts-result raw bytes (default flac)",
    )
    parser.add_argument(
        "--camb-sound-url-key",
        choices=URL_KEYS,
        default="file_url",
        help="JSON key of /text-to-sound-result?output_type=file_url (default file_url)",
    )
    parser.add_argument(
        "--camb-auth-error",
        choices=("detail", "error"),
        default="detail",
        help='401 body shape: {"detail": ...} or {"error": ..., "status": 401}',
    )
    parser.add_argument("--revid-create-response", choices=CREATE_RESPONSES, default="object")
    parser.add_argument(
        "--revid-status-http",
        choices=STATUS_HTTP,
        default="mirror",
        help="HTTP status of /api/get: mirror the body's code, or always 200",
    )
    parser.add_argument("--revid-wrap-array", action="store_true", help="wrap Revid status bodies in a list")
    parser.add_argument("--revid-result-key", choices=RESULT_KEYS, default="response")
    parser.add_argument("--revid-duration-key", choices=DURATION_KEYS, default="duration")
    parser.add_argument("--revid-status-synonyms", action="store_true", help="success/error for completed/failed")
    parser.add_argument("--require-key-on-status", action="store_true", help="Revid /api/get requires the key")
    parser.add_argument(
        "--audio-engine",
        choices=AUDIO_ENGINES,
        default="auto",
        help="speech via espeak-ng, tone melodies, or auto (espeak-ng when installed)",
    )
    parser.add_argument(
        "--audio-cache-mb",
        type=int,
        default=64,
        help="memory for rendered audio in MiB (default 64); evicted audio is rendered again when downloaded",
    )
    parser.add_argument(
        "--audio-base-url",
        default=None,
        help="base of audio/file URLs, e.g. http://localhost:{port} (default: the API URL)",
    )
    parser.add_argument("--fault-rate", type=float, default=0.0, help="probability of a random fault (0..1)")
    parser.add_argument(
        "--fault-kinds",
        type=_csv,
        default=list(TRANSIENT_FAULT_KINDS),
        help=f"comma-separated subset of: {','.join(TRANSIENT_FAULT_KINDS)} (401, 403, 422 are injection-only)",
    )
    parser.add_argument(
        "--fault-endpoints",
        type=_csv,
        default=["status", "result", "storage"],
        help=f"comma-separated subset of: {','.join(FAULT_ENDPOINTS)} (default status,result,storage)",
    )
    parser.add_argument("--retry-after", default="1", help="Retry-After value of the 429 fault (default 1)")
    parser.add_argument("--slow-seconds", type=float, default=5.0, help="delay of the slow fault (default 5)")
    parser.add_argument("--seed", type=int, default=None, help="seed of the random faults")
    parser.add_argument("--uvloop", action="store_true", help="use uvloop if it is installed")
    parser.add_argument(
        "--print-json",
        action="store_true",
        help="print one JSON line with the URLs instead of the human-readable lines",
    )
    return parser


def config_from_args(args: argparse.Namespace) -> EmulatorConfig:
    faults = FaultConfig(
        rate=args.fault_rate,
        kinds=tuple(args.fault_kinds),
        seed=args.seed,
        endpoints=frozenset(args.fault_endpoints),
        retry_after=args.retry_after,
        slow_seconds=args.slow_seconds,
    )
    return EmulatorConfig(
        default_delay=args.delay,
        audio_engine=args.audio_engine,
        audio_cache_mb=args.audio_cache_mb,
        camb_tts_format=args.camb_tts_format,
        camb_sound_url_key=args.camb_sound_url_key,
        camb_auth_error_shape=args.camb_auth_error,
        revid_create_response=args.revid_create_response,
        revid_status_http=args.revid_status_http,
        revid_wrap_array=args.revid_wrap_array,
        revid_result_key=args.revid_result_key,
        revid_duration_key=args.revid_duration_key,
        revid_status_synonyms=args.revid_status_synonyms,
        require_key_on_status=args.require_key_on_status,
        audio_base_url=args.audio_base_url,
        faults=faults,
    )


async def serve(emulator: Emulator, print_json: bool) -> None:
    await emulator.astart()
    # The handlers go in before the address is printed: whoever reads it may stop the emulator at
    # once, and a SIGTERM that arrived earlier killed it without the graceful stop (exit -15).
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        if print_json:
            print(
                json.dumps(
                    {
                        "url": emulator.url,
                        "camb_base_url": emulator.camb_base_url,
                        "revid_base_url": emulator.revid_base_url,
                        "revid_status_base_url": emulator.revid_status_base_url,
                        "audio_base_url": emulator.audio_base_url,
                        "control_url": f"{emulator.url}/_emulator",
                    }
                ),
                flush=True,
            )
        else:
            print(f"TTS emulator listening on {emulator.url}", flush=True)
            print(f"camb_ai connection host: {emulator.camb_base_url}", flush=True)
            print(
                f"revid_tts connection host: {emulator.revid_base_url} "
                f"(status_base_url: {emulator.revid_status_base_url})",
                flush=True,
            )
            print("\n".join(connection_lines(emulator)), flush=True)
        await stop.wait()
    finally:
        await emulator.astop()


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        config = config_from_args(args)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    emulator = Emulator(host=args.host, port=args.port, api_key=args.api_key, config=config)
    loop_factory: Callable[[], asyncio.AbstractEventLoop] | None = None
    if args.uvloop:
        try:
            import uvloop

            loop_factory = uvloop.new_event_loop
        except ImportError:
            print("uvloop is not installed; using the default event loop", file=sys.stderr)
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        try:
            runner.run(serve(emulator, args.print_json))
        except OSError as exc:
            if exc.errno != errno.EADDRINUSE:
                raise
            print(
                f"error: port {args.port} on {args.host} is in use; pass --port N, or --port 0 for a free one",
                file=sys.stderr,
            )
            return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
