"""A batch of texts in one task: its items, the file each is stored in, the wait list, the manifest.

The batch operators (:mod:`airflow_provider_tts.operators.batch`) submit hundreds or thousands of
vendor tasks from one Airflow task, wait for all of them in one deferral and store every audio
file. What was paid for lives in the request cache (:mod:`airflow_provider_tts.cache`), keyed by
each request's content. This package holds the rest, one module per concept:

- :mod:`~airflow_provider_tts.batch.items`: reading the items, their identity and file names;
- :mod:`~airflow_provider_tts.batch.record`: the per-run wait list (:class:`BatchRecord`);
- :mod:`~airflow_provider_tts.batch.manifest`: the manifest and the rows' messages (the result
  is :func:`airflow_provider_tts.results.batch_result`);
- :mod:`~airflow_provider_tts.batch.plan`, :mod:`~airflow_provider_tts.batch.submit`,
  :mod:`~airflow_provider_tts.batch.store`: the operator's phases;
  :mod:`~airflow_provider_tts.batch.stash`: paid task ids kept until the next try;
- :mod:`~airflow_provider_tts.batch.operator`: the operators' base class;
- :mod:`~airflow_provider_tts.batch.trigger`: the one wait, in the triggerer, for every vendor task.

Importing the package itself loads only the first three (no operator, no HTTP client).
"""

from __future__ import annotations

from airflow_provider_tts.batch.items import (
    FILE_NAME_STYLES,
    HASH_NAME_CHARS,
    ITEM_FILE_SUFFIXES,
    ITEM_META,
    SLUG_CHARS,
    SLUG_WORDS,
    WORDS_HASH_CHARS,
    BatchItem,
    CsvRow,
    FileNameStyle,
    item_parts,
    item_stem,
    items_digest,
    iter_items,
    slug,
    typed_cells,
)
from airflow_provider_tts.batch.manifest import MANIFEST_FIELDS, write_manifest
from airflow_provider_tts.batch.record import MAX_RECORD_BYTES, STATE_FOLDER, BatchRecord

__all__ = [
    "FILE_NAME_STYLES",
    "HASH_NAME_CHARS",
    "ITEM_FILE_SUFFIXES",
    "ITEM_META",
    "MANIFEST_FIELDS",
    "MAX_RECORD_BYTES",
    "SLUG_CHARS",
    "SLUG_WORDS",
    "STATE_FOLDER",
    "WORDS_HASH_CHARS",
    "BatchItem",
    "BatchRecord",
    "CsvRow",
    "FileNameStyle",
    "item_parts",
    "item_stem",
    "items_digest",
    "iter_items",
    "slug",
    "typed_cells",
    "write_manifest",
]
