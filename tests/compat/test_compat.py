"""The names the package takes from compat.py work on the Airflow this test runs on (every CI minor).

Both names below moved between minors: ``mask_secret`` is exported by ``airflow.sdk.log`` only from
3.0.6 on, and ``get_hook_lineage_collector`` reached ``airflow.sdk.lineage`` only in 3.2. Importing
them from their 3.3 homes failed every store task on 3.0 and 3.1 (the hook masks the key first, the
store reports its file to the lineage collector last), which only the real-Airflow runs showed.
"""

from __future__ import annotations

import pytest

from airflow_provider_tts import compat


def test_mask_secret_registers_the_key_with_the_masker_this_airflow_uses() -> None:
    compat.mask_secret("sk-compat-test-secret")


def test_the_hook_lineage_collector_accepts_an_output_asset() -> None:
    collector = compat.get_hook_lineage_collector()
    assert callable(collector.add_output_asset)


def test_features_names_the_running_airflow() -> None:
    assert compat.features()["airflow"] == compat.AIRFLOW_VERSION


class _TriggererComms:
    """Like the triggerer's channel to its supervisor: a synchronous send that bridges to async."""

    def send(self, msg: object) -> None:
        from asgiref.sync import async_to_sync

        async def deliver() -> None:
            return None

        async_to_sync(deliver)()  # raises inside a running event loop, as in the triggerer


async def test_mask_secret_inside_a_running_event_loop_still_masks(monkeypatch: pytest.MonkeyPatch) -> None:
    """Where the triggerer calls it: on 3.0 Airflow's own ``mask_secret`` raised here (AsyncToSync)."""
    from airflow.sdk.execution_time import task_runner

    secret = "sk-compat-test-secret-in-a-loop"
    monkeypatch.setattr(task_runner, "SUPERVISOR_COMMS", _TriggererComms(), raising=False)
    compat.mask_secret(secret)
    assert secret not in str(compat._process_masker().redact(f"key={secret}"))


# ------------------------------------------------------------- every probe, on the minor this runs on


def test_the_exceptions_are_the_classes_this_task_runner_catches() -> None:
    """A task fails without retries only on the AirflowFailException its own runner imports."""
    import inspect

    from airflow.sdk.execution_time import task_runner

    source = inspect.getsource(task_runner)
    for name in ("AirflowFailException", "AirflowSkipException", "AirflowSensorTimeout", "TaskDeferred"):
        assert name in source
        home = next(
            module
            for module in ("airflow.sdk.exceptions", "airflow.exceptions")
            if hasattr(__import__(module, fromlist=[name]), name)
        )
        assert getattr(compat, name) is getattr(__import__(home, fromlist=[name]), name), name


def test_async_connection_lookup_works_whatever_the_flag_says(monkeypatch: pytest.MonkeyPatch) -> None:
    import asyncio
    import json

    monkeypatch.setenv("AIRFLOW_CONN_COMPAT_PROBE", json.dumps({"conn_type": "camb_ai", "password": "sk-probe-123"}))
    assert hasattr(compat._shims.BaseHook, "aget_connection") == compat.HAS_ASYNC_GET_CONNECTION
    conn = asyncio.run(compat.BaseHook.aget_connection("compat_probe"))
    assert conn.conn_type == "camb_ai"


def test_the_feature_flags_match_what_airflow_has() -> None:
    from airflow.triggers.base import BaseTrigger

    assert callable(getattr(BaseTrigger, "on_kill", None)) == compat.HAS_TRIGGER_ON_KILL
    assert hasattr(__import__("airflow.sdk", fromlist=["x"]), "ResumableJobMixin") == compat.HAS_RESUMABLE_JOB_MIXIN
    assert set(compat.features()) == {"airflow", "task_state_store", "resumable_job_mixin", "trigger_on_kill",
                                      "async_get_connection"}  # fmt: skip


def test_has_fs_knows_file_and_not_an_invented_scheme() -> None:
    assert compat.has_fs("file")
    assert not compat.has_fs("no-such-scheme-xyz")


def test_the_connection_id_and_bucket_of_an_object_storage_path() -> None:
    from airflow.sdk import ObjectStoragePath

    path = ObjectStoragePath("s3://audio-bucket/out/a.wav", conn_id="aws_probe")
    assert compat.conn_id_of(path) == "aws_probe"  # universal-pathlib 0.2 keeps it in storage_options
    assert compat.bucket_of(path) == "audio-bucket"
    assert compat.conn_id_of(ObjectStoragePath("file:///tmp/a.wav")) is None


def test_outside_dag_test_nothing_is_wrapped() -> None:
    assert not compat.in_dag_test()
    assert not compat.has_supervisor()  # Variables unreachable: 3.0 raises ImportError, 3.1+ "not found"
    compat.omit_secrets_from_dag_test_log()  # a no-op here


class InProcessSupervisorComms:
    """Named as Airflow's dag.test() stand-in; records what its logger was asked to log."""

    def __init__(self) -> None:
        self.lines: list[tuple[str, dict[str, object]]] = []
        outer = self

        class Log:
            def debug(self, event: str, **kw: object) -> None:
                outer.lines.append((event, kw))

        self.log = Log()


def test_inside_dag_test_a_mask_secret_body_never_reaches_the_log(monkeypatch: pytest.MonkeyPatch) -> None:
    from airflow.sdk.execution_time import task_runner
    from airflow.sdk.execution_time.comms import GetConnection, MaskSecret

    comms = InProcessSupervisorComms()
    monkeypatch.setattr(task_runner, "SUPERVISOR_COMMS", comms, raising=False)
    assert compat.in_dag_test()
    assert compat.has_supervisor()
    compat.omit_secrets_from_dag_test_log()
    compat.omit_secrets_from_dag_test_log()  # idempotent: one wrapper
    comms.log.debug("Sending request", msg=MaskSecret(value="sk-never-in-a-log", name=None))
    comms.log.debug("Sending request", msg=GetConnection(conn_id="c"))
    assert "sk-never-in-a-log" not in repr(comms.lines)
    assert comms.lines[0] == ("Sending request", {"msg": "MaskSecret(body omitted)"})
    assert isinstance(comms.lines[1][1]["msg"], GetConnection)  # everything else is logged as before


def test_without_airflow_s_private_masker_the_package_still_imports_and_masks(monkeypatch: pytest.MonkeyPatch) -> None:
    """The private masker is looked up only when needed; a future Airflow that moves it breaks nothing."""
    import subprocess
    import sys

    probe = (
        "import importlib, sys\n"
        "real = importlib.import_module\n"
        "def refuse(name, *a, **k):\n"
        "    if name in ('airflow.sdk._shared.secrets_masker', 'airflow.sdk.execution_time.secrets_masker'):\n"
        "        raise ImportError(name)\n"
        "    return real(name, *a, **k)\n"
        "importlib.import_module = refuse\n"
        "from airflow_provider_tts import compat\n"
        "print(compat._process_masker())\n"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1] == "None"
