"""A worker process that runs TtsAudioToStorageOperator.execute and can be killed mid-download.

Run by the kill tests as ``python -m tests.operators._download_worker SPEC_JSON``. The spec names the
connection, task, destination and the task-instance identity (which fixes the temporary's name).
To be deterministically *mid-way* when the test kills it, the worker slows itself down after
``pause_after_bytes``: it writes ``ready_file`` (with the byte count so far) and then sleeps
``pause_seconds`` after each further chunk. Everything else is the operator's own code path: the
same HTTP stream, the same temporary beside the destination, the same store.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterator
from pathlib import Path


def main(spec: dict[str, object]) -> None:
    from airflow_provider_tts.operators.tts import TtsAudioToStorageOperator
    from airflow_provider_tts.transport import AudioStream
    from tests.operators.conftest import ti_context

    if spec.get("attach"):  # a gs:// or abfs:// destination: the filesystem the test attached, here too
        from tests.operators.object_stores import attach_filesystem

        attach_filesystem(*spec["attach"])  # type: ignore[misc]
    ready = Path(str(spec["ready_file"]))
    pause_after = int(spec["pause_after_bytes"])  # type: ignore[call-overload]
    pause = float(spec["pause_seconds"])  # type: ignore[arg-type]
    original = AudioStream.iter_chunks

    def iter_chunks(self: AudioStream, chunk_size: int = 1 << 20) -> Iterator[bytes]:
        done = 0
        for chunk in original(self, chunk_size):
            yield chunk  # store_stream has written it by the time the generator resumes
            done += len(chunk)
            if done >= pause_after:
                if not ready.exists():
                    ready.write_text(str(done))
                time.sleep(pause)

    AudioStream.iter_chunks = iter_chunks  # type: ignore[method-assign]
    op = TtsAudioToStorageOperator(
        task_id="download",
        tts_conn_id=str(spec["tts_conn_id"]),
        tts_task_id=str(spec["tts_task_id"]),
        kind=str(spec["kind"]),
        destination=str(spec["destination"]),
        dest_conn_id=spec.get("dest_conn_id"),  # type: ignore[arg-type]
        deferrable=False,
    )
    result = op.execute(ti_context(str(spec["run_id"])))  # type: ignore[arg-type]
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main(json.loads(sys.argv[1]))
