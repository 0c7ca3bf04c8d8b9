"""The command line: start, announce the address, serve, stop cleanly on SIGINT/SIGTERM; standalone import."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from airflow_provider_tts.emulator import DEFAULT_API_KEY, EmulatorConfig

SRC = str(Path(__file__).resolve().parents[2])


def _env() -> dict[str, str]:
    return dict(os.environ, PYTHONPATH=SRC + os.pathsep + os.environ.get("PYTHONPATH", ""))


class Cli:
    def __init__(self, *args: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "airflow_provider_tts.emulator", "--port", "0", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=_env(),
        )
        assert self.proc.stdout is not None
        self.first_line = self.proc.stdout.readline().strip()
        self.stderr = ""

    def stop(self, sig: signal.Signals = signal.SIGTERM) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout=10)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
            if self.proc.stderr is not None and not self.proc.stderr.closed:
                self.stderr = self.proc.stderr.read()
            for stream in (self.proc.stdout, self.proc.stderr):
                if stream is not None:
                    stream.close()


@pytest.fixture
def cli() -> Iterator[list[Cli]]:
    started: list[Cli] = []
    yield started
    for process in started:
        process.stop(signal.SIGKILL)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_starts_announces_and_stops(cli: list[Cli], sig: signal.Signals) -> None:
    proc = Cli("--delay", "0")
    cli.append(proc)
    match = re.fullmatch(r"TTS emulator listening on (http://127\.0\.0\.1:\d+)", proc.first_line)
    assert match, proc.first_line
    url = match.group(1)
    assert proc.proc.stdout is not None
    assert proc.proc.stdout.readline().strip() == f"camb_ai connection host: {url}/apis"
    assert f"{url}/paid" in proc.proc.stdout.readline()
    assert requests.get(f"{url}/_emulator/health").json()["ok"] is True
    created = requests.post(f"{url}/paid/text-to-speech", json={"text": "cli"}, headers={"x-api-key": DEFAULT_API_KEY})
    assert created.status_code == 202
    assert requests.get(f"{url}/api/get/{created.json()['task_id']}").json()["status"] == "completed"
    assert proc.stop(sig) == 0
    assert "Traceback" not in proc.stderr


def test_print_json_custom_key_and_faults(cli: list[Cli]) -> None:
    proc = Cli(
        "--print-json",
        "--api-key",
        "sk-cli",
        "--fault-rate",
        "1",
        "--fault-kinds",
        "503",
        "--fault-endpoints",
        "status",
        "--seed",
        "1",
        "--camb-tts-format",
        "wav",
        "--uvloop",
    )
    cli.append(proc)
    info = json.loads(proc.first_line)
    url = info["url"]
    assert info["camb_base_url"] == f"{url}/apis"
    assert info["revid_base_url"] == f"{url}/paid"
    assert info["revid_status_base_url"] == f"{url}/api"
    assert requests.get(f"{url}/apis/tts/x", headers={"x-api-key": DEFAULT_API_KEY}).status_code == 503
    created = requests.post(
        f"{url}/apis/tts", json={"text": "x", "voice_id": 1, "language": 1}, headers={"x-api-key": "sk-cli"}
    )
    assert created.status_code == 200  # create is not a faulted endpoint
    config = requests.get(f"{url}/_emulator/config").json()
    assert config["camb_tts_format"] == "wav"
    assert config["faults"]["kinds"] == ["503"]
    assert proc.stop() == 0


def test_bad_arguments_fail_fast() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "airflow_provider_tts.emulator", "--fault-kinds", "boom"],
        capture_output=True,
        text=True,
        env=_env(),
        timeout=30,
        check=False,
    )
    assert done.returncode == 2
    assert "boom" in done.stderr


def test_help_names_the_default_key() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "airflow_provider_tts.emulator", "--help"],
        capture_output=True,
        text=True,
        env=_env(),
        timeout=30,
        check=False,
    )
    assert done.returncode == 0
    assert DEFAULT_API_KEY in done.stdout


def test_emulator_imports_neither_airflow_nor_the_provider() -> None:
    # aiohttp is the emulator's server; what aiohttp itself imports (yarl imports pydantic when it
    # is installed, from yarl 1.23) is measured away, so only the emulator's own imports count.
    code = (
        "import sys, aiohttp.web\n"
        "before = set(sys.modules)\n"
        "import airflow_provider_tts.emulator.__main__\n"
        "bad = sorted(m for m in set(sys.modules) - before if m == 'airflow' or m.startswith('airflow.')\n"
        "             or (m.startswith('airflow_provider_tts.')\n"
        "                 and not m.startswith('airflow_provider_tts.emulator'))\n"
        "             or m.split('.')[0] in ('requests', 'pydantic', 'tenacity'))\n"
        "print(bad)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=_env(), timeout=30, check=True
    )
    assert done.stdout.strip() == "[]"


def test_default_port_is_not_airflows() -> None:
    # Issue 16.2: the README's --port 8080 is the api-server's; the default is a port Airflow leaves alone.
    from airflow_provider_tts.emulator.__main__ import DEFAULT_PORT, build_parser

    assert build_parser().parse_args([]).port == DEFAULT_PORT
    assert DEFAULT_PORT not in (0, 8080, 8793, 8794, 8974, 5555, 8765)


def test_audio_cache_mb_flag() -> None:
    """Issue 24: a benchmark that downloads thousands of tasks' audio sizes the render cache for them."""
    from airflow_provider_tts.emulator.__main__ import build_parser, config_from_args

    parser = build_parser()
    assert config_from_args(parser.parse_args([])).audio_cache_mb == EmulatorConfig().audio_cache_mb == 64
    assert config_from_args(parser.parse_args(["--audio-cache-mb", "1000"])).audio_cache_mb == 1000


def test_prints_connection_commands_and_env_lines_that_point_at_itself(cli: list[Cli]) -> None:
    import shlex

    proc = Cli("--delay", "0", "--api-key", "sk-cli key")
    cli.append(proc)
    url = proc.first_line.rsplit(" ", 1)[1]
    assert proc.proc.stdout is not None
    lines = [proc.proc.stdout.readline().strip() for _ in range(7)]
    adds = {shlex.split(line)[3]: shlex.split(line) for line in lines if line.startswith("airflow connections add")}
    assert set(adds) == {"camb_ai_default", "revid_tts_default"}
    camb, revid = adds["camb_ai_default"], adds["revid_tts_default"]
    assert camb[camb.index("--conn-type") + 1] == "camb_ai"
    assert camb[camb.index("--conn-host") + 1] == f"{url}/apis"
    assert camb[camb.index("--conn-password") + 1] == "sk-cli key"
    assert revid[revid.index("--conn-host") + 1] == f"{url}/paid"
    assert json.loads(revid[revid.index("--conn-extra") + 1]) == {"status_base_url": f"{url}/api"}
    env = {}
    for line in lines:
        if line.startswith("export "):
            name, _, value = line.removeprefix("export ").partition("=")
            env[name] = json.loads(shlex.split(value)[0])
    assert env["AIRFLOW_CONN_CAMB_AI_DEFAULT"] == {
        "conn_type": "camb_ai",
        "host": f"{url}/apis",
        "password": "sk-cli key",
    }
    assert env["AIRFLOW_CONN_REVID_TTS_DEFAULT"]["extra"] == {"status_base_url": f"{url}/api"}
    assert proc.stop() == 0


def test_a_busy_port_is_a_clear_error() -> None:
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        done = subprocess.run(
            [sys.executable, "-m", "airflow_provider_tts.emulator", "--port", str(port)],
            capture_output=True,
            text=True,
            env=_env(),
            timeout=60,
            check=False,
        )
    assert done.returncode == 2, done.stderr
    assert f"port {port}" in done.stderr
    assert "--port 0" in done.stderr
    assert "Traceback" not in done.stderr
