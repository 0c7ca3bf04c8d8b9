"""What every operator that stores audio shares: the store call, the URI it reports, the one output.

* :func:`plain_uri` (defined in :mod:`airflow_provider_tts.storage`): a destination's URI without
  its connection id, as XCom and asset events carry it.
* :func:`stream_audio_into`: one task's opened audio into a checked destination, through
  :func:`~airflow_provider_tts.storage.store_stream` (constant memory, atomic, verified), after
  aborting the open upload a killed earlier try left behind.
* :class:`StoredAudioOutput`: the mixin that names a file inside a folder destination, names its
  temporary per task instance (never per try), and reports the stored object as the task's one
  output (asset event, hook lineage, OpenLineage facets).

No operator is defined here; the storing operators and the batch operators import these.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from airflow.sdk import Asset, AssetAlias

from airflow_provider_tts.exceptions import TtsConfigError
from airflow_provider_tts.lineage import OutletsForTestRuns, asset_event_extra
from airflow_provider_tts.naming import check_file_name
from airflow_provider_tts.storage import OverwritePolicy, abort_stale_uploads, store_stream
from airflow_provider_tts.storage import plain_uri as plain_uri

#: Downloads of one paid task's audio within one Airflow try, each after the transport's own retries: a
#: 200 maintenance page or a garbled answer at download time is tried again in place, with a fresh status
#: (and URL), because the vendor task is paid and done; only then does the try fail (batch and one-task alike).
STORE_ATTEMPTS = 3

if TYPE_CHECKING:
    from airflow.providers.openlineage.extractors import OperatorLineage
    from airflow.sdk import Context, ObjectStoragePath

    from airflow_provider_tts.hooks.tts import TtsHook
    from airflow_provider_tts.status import TtsTaskStatus
    from airflow_provider_tts.storage import StoredAudio
    from airflow_provider_tts.transport import AudioStream


def stream_audio_into(
    path: ObjectStoragePath,
    chunks: Iterable[bytes],
    audio: AudioStream,
    status: TtsTaskStatus,
    *,
    temp_name: str,
    retried: bool,
    overwrite: OverwritePolicy,
    max_bytes: int,
    chunk_bytes: int,
) -> StoredAudio:
    """Store one task's opened audio at ``path`` (a checked destination), as every downloading operator does.

    On a retried try, an open multipart upload a killed earlier try left on ``temp_name`` is
    aborted first; then the bytes go through :func:`~airflow_provider_tts.storage.store_stream`.
    """
    if retried:
        abort_stale_uploads(path, temp_name)  # a killed earlier try's open upload
    return store_stream(
        chunks,
        path,
        temp_name=temp_name,
        content_type=audio.content_type,
        content_length=audio.content_length,
        tts_task_id=status.tts_task_id,
        overwrite=overwrite,
        max_bytes=max_bytes,
        chunk_bytes=chunk_bytes,
        duration_seconds=status.duration_seconds,
        checked=True,
    )


class StoredAudioOutput(OutletsForTestRuns):
    """What every operator that stores audio shares: the file's name, its temporary's, and the one output it reports.

    Shared by :class:`~airflow_provider_tts.operators.audio_to_storage.TtsAudioToStorageOperator` and
    :class:`~airflow_provider_tts.operators.stream_to_storage.CambTtsStreamToStorageOperator`, so
    both name files in a folder the same way (:mod:`airflow_provider_tts.naming`) and emit the same
    asset event, hook lineage and OpenLineage facets for the object they wrote.
    """

    if TYPE_CHECKING:
        kind: str
        stored_audio: dict[str, Any] | None
        destination: Any
        file_name: str | None

        @property
        def hook(self) -> TtsHook: ...

    def _given_name(self, folder: bool) -> str | None:
        """The rendered ``file_name``, validated; None when there is none. Raises before any request.

        ``file_name`` names a file *inside* a folder destination: with a file destination it
        would be ignored or contradict it, so it is an error naming both.
        """
        if self.file_name is None:
            return None
        if not folder:
            raise TtsConfigError(
                f"file_name={self.file_name!r} names a file inside a folder, but destination "
                f"{str(self.destination)!r} is a file; end the destination with '/' or drop file_name"
            )
        return check_file_name(self.file_name)

    def _temp_name(self, context: Context, final_name: str) -> str:
        """The temporary's name, fixed per task instance (never the try) so a killed try's leftover is overwritten."""
        ti = context.get("ti")
        identity = (
            "/".join(str(getattr(ti, attr, "")) for attr in ("dag_id", "task_id", "run_id", "map_index")) or "manual"
        )
        return f".{final_name}.{hashlib.sha256(identity.encode()).hexdigest()[:12]}.partial"

    def _emit_asset(self, context: Context, stored: dict[str, Any]) -> None:
        """Record the stored file as this task's one output: asset event, hook lineage, OpenLineage.

        Called once the destination holds the audio (``stored`` is the XCom dict). Every
        ``Asset`` outlet gets the file in its event's ``extra``; an opt-in ``AssetAlias`` gets the
        file's own asset. The destination is reported to the hook lineage collector here, by URI,
        so lineage never depends on how the storage layer wrote it (a temporary and a move, or a
        direct upload): that layer must not report its temporary.
        """
        from airflow.sdk.definitions.asset import AssetRef

        from airflow_provider_tts.compat import get_hook_lineage_collector

        self.stored_audio = dict(stored)
        extra = asset_event_extra(stored, self.kind)
        events = context.get("outlet_events")
        if events is not None:
            for outlet in self.outlets:
                if isinstance(outlet, AssetAlias):
                    events[outlet].add(Asset(stored["uri"]), extra=extra)
                elif isinstance(outlet, Asset | AssetRef):
                    events[outlet].extra.update(extra)
        get_hook_lineage_collector().add_output_asset(context=self.hook, uri=stored["uri"])

    def get_openlineage_facets_on_complete(self, task_instance: Any) -> OperatorLineage[Any, Any]:
        """OpenLineage facets of the finished store (called by the OpenLineage provider, if installed).

        The output dataset is the stored object (namespace and name per the OpenLineage naming
        spec: ``file`` + path, ``s3://<bucket>`` + key); run facets carry the vendor job
        (``externalQuery``: task id and API; ``ttsJob``: api, kind, task id, audio duration).
        No input dataset: the text lives with the vendor, and a temporary object is not data.
        """
        from airflow_provider_tts.lineage import operator_lineage

        if self.stored_audio is None:  # failed before storing: nothing to report, no connection lookup
            return operator_lineage(None, api=None, kind=self.kind)
        return operator_lineage(self.stored_audio, api=self.hook.api, kind=self.kind)
