"""Batch audio at the cost of one task: N texts, one deferral, one file per text, one manifest.

Mapping a submit task and a store task over 1,000 texts makes 2,000 task instances, and
Airflow's per-task overhead, not the vendor, then sets the pace. The operators here take the
whole list in one task, in the style of the one-task operators (one class per vendor and kind):

=========================================  =========  =================  ======================
operator                                   vendor     kind               a text item fills
=========================================  =========  =================  ======================
``CambTtsBatchToStorageOperator``          Camb.ai    ``tts``            ``text``
``CambTextToSoundBatchToStorageOperator``  Camb.ai    ``text-to-sound``  ``prompt``
``RevidTtsBatchToStorageOperator``         RevidAPI   ``tts``            ``text``
``RevidSrtToSpeechBatchToStorageOperator`` RevidAPI   ``srt-to-speech``  ``srt``
=========================================  =========  =================  ======================

What one task instance does:

1. **Plan**: read every item (a list, or a ``.jsonl``/``.csv``/``.txt`` file), merge it over
   ``defaults``, validate it against the vendor's documented body, check keys and file names are
   unique: any mistake fails here, before anything is paid for or written.
2. **Submit**: items whose request the folder's request cache (``.tts-cache/``) already holds
   audio for cost nothing; the rest are created ``max_active_requests`` at a time, each request
   claimed in the cache before its create call and its vendor id recorded right after, so a
   retry or a concurrent run re-attaches and never pays twice for an item; sustained 429s
   pause every request of the batch for their ``Retry-After`` (a stray one delays only its request).
3. **Wait**: one deferral on :class:`~airflow_provider_tts.triggers.batch.TtsBatchTrigger` for
   all items (or the same loop in the worker with ``deferrable=False``).
4. **Store**: every finished audio streamed into the destination folder, ``max_active_requests``
   at a time, each through the same atomic, constant-memory writer as the single store; then the
   manifest (one JSON line per item) beside the audio.

**Per-item isolation.** A rejected or failed item is a manifest row with the vendor's reason, not a
failed batch; the task fails when more than ``max_failed_items`` items failed (default 0: any
failure fails the task, after everything else was stored, so a retry redoes only the failures:
retryable ones are resubmitted, permanent ones are reported again without paying).

The result (XCom) is small: counts, the manifest's URI and the stored files' URIs up to
:data:`~airflow_provider_tts.results.BATCH_RESULT_FILES` (table: ``docs/results.md``); the
per-item rows are in the manifest.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

# Besides the classes, the constants this module has always offered; each is looked up (and so
# patched) in the module of the batch package that defines it.
from airflow_provider_tts.batch.operator import DEFAULT_BATCH_TIMEOUT as DEFAULT_BATCH_TIMEOUT
from airflow_provider_tts.batch.operator import MAX_ACTIVE_REQUESTS as MAX_ACTIVE_REQUESTS
from airflow_provider_tts.batch.operator import BaseTextBatchToStorageOperator
from airflow_provider_tts.batch.store import EVENT_KEYS as EVENT_KEYS
from airflow_provider_tts.batch.store import STORE_ATTEMPTS as STORE_ATTEMPTS
from airflow_provider_tts.batch.submit import CLAIM_POLL_SECONDS as CLAIM_POLL_SECONDS
from airflow_provider_tts.batch.submit import CLAIM_WAIT_SECONDS as CLAIM_WAIT_SECONDS
from airflow_provider_tts.batch.submit import CREATE_ROUNDS as CREATE_ROUNDS
from airflow_provider_tts.batch.submit import PAY_CHUNK as PAY_CHUNK
from airflow_provider_tts.batch.submit import RECORD_ATTEMPTS as RECORD_ATTEMPTS
from airflow_provider_tts.batch.submit import RECORD_BACKOFF as RECORD_BACKOFF
from airflow_provider_tts.vendors import VendorOf

if TYPE_CHECKING:
    from airflow_provider_tts.batch.trigger import TtsBatchTrigger as TtsBatchTrigger


def __getattr__(name: str) -> Any:
    # ``TtsBatchTrigger`` has always been importable from here; it is loaded on first use because its
    # module builds Airflow's trigger models, which a DAG file that only uses the operators never needs.
    if name == "TtsBatchTrigger":
        from airflow_provider_tts.batch.trigger import TtsBatchTrigger

        return TtsBatchTrigger
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


class CambTtsBatchToStorageOperator(BaseTextBatchToStorageOperator):
    """Speak every text of a batch with Camb.ai's ``/tts``, in one task (see the module docstring).

    A text item fills ``text``; ``defaults`` typically carries ``voice_id`` and ``language``.
    """

    vendor = VendorOf("camb_ai")
    tts_kind = "tts"
    item_field = "text"


class CambTextToSoundBatchToStorageOperator(BaseTextBatchToStorageOperator):
    """Make a sound for every prompt of a batch with Camb.ai's ``/text-to-sound``, in one task."""

    vendor = VendorOf("camb_ai")
    tts_kind = "text-to-sound"
    item_field = "prompt"


class RevidTtsBatchToStorageOperator(BaseTextBatchToStorageOperator):
    """Speak every text of a batch with RevidAPI's text-to-speech, in one task.

    Each item gets a deterministic reference (RevidAPI's ``id``) derived from the task instance
    and the item's key, so a duplicate can be found vendor-side.
    """

    vendor = VendorOf("revid_tts")
    tts_kind = "tts"
    item_field = "text"


class RevidSrtToSpeechBatchToStorageOperator(BaseTextBatchToStorageOperator):
    """Voice every SRT text of a batch with RevidAPI's SRT-to-speech, in one task (a text item fills ``srt``)."""

    vendor = VendorOf("revid_tts")
    tts_kind = "srt-to-speech"
    item_field = "srt"


__all__ = [
    "BaseTextBatchToStorageOperator",
    "CambTextToSoundBatchToStorageOperator",
    "CambTtsBatchToStorageOperator",
    "RevidSrtToSpeechBatchToStorageOperator",
    "RevidTtsBatchToStorageOperator",
]
