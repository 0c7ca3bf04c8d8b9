"""Every example DAG imports cleanly, quickly, and without touching the network."""

from __future__ import annotations

import time
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parent.parent / "example_dags"


def test_example_dags_parse_without_errors() -> None:
    try:
        from airflow.dag_processing.dagbag import DagBag
    except ImportError:  # Airflow 3.0 keeps it in airflow.models
        from airflow.models.dagbag import DagBag  # type: ignore[no-redef]

    started = time.monotonic()
    bag = DagBag(dag_folder=str(EXAMPLES))
    assert bag.import_errors == {}
    assert set(bag.dag_ids) == {
        "example_tts_single",
        "example_tts_batch",
        "example_tts_existing_dag",
        "example_tts_sound_and_srt",
        "example_tts_scheduled_retries",
        "example_tts_stream",
        "example_tts_batch_announce",
        "example_tts_batch_one_task",
        "example_tts_long_text",
    }
    assert time.monotonic() - started < 30
    batch = bag.dags.get("example_tts_batch")
    assert batch is not None
    assert len(batch.params["texts"]) >= 50


def test_a_typo_in_a_field_name_fails_when_the_dag_is_parsed(tmp_path: Path) -> None:
    """The single-text example with ``voice_idd=`` is an import error naming the typo (issue 14)."""
    try:
        from airflow.dag_processing.dagbag import DagBag
    except ImportError:  # Airflow 3.0 keeps it in airflow.models
        from airflow.models.dagbag import DagBag  # type: ignore[no-redef]

    source = (EXAMPLES / "example_tts_single.py").read_text()
    assert source.count("voice_id=20303,") == 1
    (tmp_path / "example_tts_single_typo.py").write_text(source.replace("voice_id=20303,", "voice_idd=20303,"))
    bag = DagBag(dag_folder=str(tmp_path))
    assert bag.dag_ids == []
    (error,) = bag.import_errors.values()
    assert "Invalid arguments were passed to CambTtsToStorageOperator (task_id: speak)" in error
    assert "'voice_idd' (did you mean 'voice_id'?)" in error
