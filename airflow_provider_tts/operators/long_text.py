"""One audio file from a text of any length, in one task: split, speak, join; pay only for changed parts.

=========================================  =========  ========  ==========================
operator                                   vendor     kind      a part at most (default)
=========================================  =========  ========  ==========================
``CambTtsLongTextToStorageOperator``       Camb.ai    ``tts``   3,000 characters
``CambTtsStreamLongTextToStorageOperator`` Camb.ai    stream    3,000 characters (min. 3)
``RevidTtsLongTextToStorageOperator``      RevidAPI   ``tts``   2,000 characters
=========================================  =========  ========  ==========================

The task-based ones are batch operators whose items are the parts of one text (the base class,
:class:`~airflow_provider_tts.longtext.operator.BaseLongTextToStorageOperator`, says how): one
deferral for every part, bounded concurrency, paying once per part across retries and re-runs. The
``/tts-stream`` one has nothing to wait for: it streams the parts a few at once through the same
request cache (:mod:`airflow_provider_tts.longtext.stream`). Every one stores one joined file
with a timing sidecar (and captions on request) at the destination. The limits per vendor and
kind are in one place, ``Vendor.text_limits``. How-to: ``docs/howto/long-texts.md``.
"""

from __future__ import annotations

from airflow_provider_tts.longtext.operator import BaseLongTextToStorageOperator
from airflow_provider_tts.longtext.stream import CambTtsStreamLongTextToStorageOperator
from airflow_provider_tts.vendors import VendorOf


class CambTtsLongTextToStorageOperator(BaseLongTextToStorageOperator):
    """Speak a long text with Camb.ai's ``/tts`` into one file (FLAC or WAV, as Camb answers).

    ``defaults`` typically carries ``voice_id`` and ``language`` (the integer id).
    """

    vendor = VendorOf("camb_ai")
    tts_kind = "tts"
    item_field = "text"


class RevidTtsLongTextToStorageOperator(BaseLongTextToStorageOperator):
    """Speak a long text with RevidAPI's text-to-speech into one file.

    Each part gets RevidAPI's deterministic ``id`` (from the task instance and the part's request),
    so a duplicate can be found vendor-side, as for every batch item.
    """

    vendor = VendorOf("revid_tts")
    tts_kind = "tts"
    item_field = "text"


__all__ = [
    "BaseLongTextToStorageOperator",
    "CambTtsLongTextToStorageOperator",
    "CambTtsStreamLongTextToStorageOperator",
    "RevidTtsLongTextToStorageOperator",
]
