"""File names inside a folder destination: a name a person gave, or a default stable across re-runs.

A folder destination (``s3://audio/briefings/``) receives one file per task instance. Its name is

* the rendered ``file_name`` when the operator has one (Jinja, so ``"{{ ds }}-briefing"`` or a
  name per mapped item works), checked by :func:`check_file_name` before anything is requested;
* otherwise :func:`default_stem`: ``<dag_id>-<task_id>``, plus ``-<map_index>`` (zero-padded, so
  a listing sorts in map order) for a mapped task. It is the same on every try, clear and new run
  of the same item, so ``overwrite="skip_if_identical"`` finds the earlier file and a re-run adds
  no second one; the DAG id keeps two DAGs whose store tasks share a task id apart in one folder.
  The vendor's task id is never the name: it changes on every submit, so re-runs would pile up
  files nobody could match to their item.

Either way the extension follows the audio (:func:`with_extension`): filled in from the content
type (or the requested format) when the name carries no audio extension, and refused when the name
carries one that contradicts the audio, as for a literal file destination.
"""

from __future__ import annotations

import hashlib
import os
import re
from typing import TYPE_CHECKING, Any

from airflow_provider_tts.exceptions import TtsConfigError
from airflow_provider_tts.storage import EXTENSIONS, SAME_CONTAINER, check_extension, extension_for, same_container

if TYPE_CHECKING:
    from airflow.sdk import Context

#: Longest file name accepted, in UTF-8 bytes. Local filesystems allow 255 per name; the writer's
#: temporary (``.<name>.<12 hex>.partial``) and the stream cache's sidecar (``<name>.tts.json``)
#: add up to 22 more, and both must fit too.
MAX_NAME_BYTES = 200
#: Digits of the zero-padded map index in a default name: ``[core] max_map_length`` defaults to
#: 1,024, so four keep a default-sized batch sorted; a longer one still gets unique names.
MAP_INDEX_DIGITS = 4
#: Extensions that already say what a file is: a name ending in one keeps it (and is checked
#: against the audio); any other name gets the audio's extension appended (``"1. The river"``
#: ends in ``". The river"``, which is not an extension).
AUDIO_EXTENSIONS = frozenset(EXTENSIONS.values()) | frozenset(SAME_CONTAINER) | {".pcm", ".bin"}
#: A control character (C0 or DEL): one regex search instead of a Python loop over the name, which
#: was a measurable part of a small file's store (the name is checked at parse, before paying and at
#: the write).
_CONTROL = re.compile("[\x00-\x1f\x7f]")


def check_file_name(rendered: Any) -> str:
    """The rendered ``file_name``, validated as one plain file name; raises naming what arrived.

    Refused: anything but a non-blank string; a ``/`` or ``\\`` (a name, not a path: a sub-folder
    belongs in ``destination``); ``..`` anywhere (never a way out of the folder); a leading ``.``
    (hidden files, and the writer's temporaries start with one); control characters; more than
    :data:`MAX_NAME_BYTES` bytes. Surrounding whitespace (a template's stray newline) is dropped.
    """
    expected = "expected a plain file name such as 'chapter-01' or 'chapter-01.mp3'"
    if not isinstance(rendered, str) or not rendered.strip():
        raise TtsConfigError(f"file_name rendered to {rendered!r}; {expected}")
    name = rendered.strip()
    problem = None
    if "/" in name or "\\" in name:
        problem = "contains a path separator; put sub-folders in destination"
    elif ".." in name:
        problem = "contains '..'"
    elif name.startswith("."):
        problem = "starts with '.' (hidden files and the writer's temporaries do)"
    elif _CONTROL.search(name):
        problem = "contains a control character"
    elif len(name.encode()) > MAX_NAME_BYTES:
        problem = f"is {len(name.encode())} bytes long; at most {MAX_NAME_BYTES} fit beside the writer's temporary"
    if problem is not None:
        shown = name if len(name) <= 80 else f"{name[:60]}...{name[-12:]}"
        raise TtsConfigError(f"file_name {shown!r} {problem}; {expected}")
    return name


def default_stem(context: Context, task_id: str) -> str:
    """``<dag_id>-<task_id>[-<map_index>]``: the same for every try and re-run of one item.

    The ids come from the running task instance; outside Airflow (no ``ti`` in the context) the
    operator's ``task_id`` alone.
    """
    ti = context.get("ti")
    dag_id, ti_task_id, map_index = (getattr(ti, name, None) for name in ("dag_id", "task_id", "map_index"))
    dag_id = dag_id if isinstance(dag_id, str) else None
    stem = ti_task_id if isinstance(ti_task_id, str) and ti_task_id else task_id
    stem = f"{dag_id}-{stem}" if dag_id else stem
    if len(stem.encode()) > MAX_NAME_BYTES - 32:  # ids may be 250 characters each: keep the name unique
        stem = f"{stem[: MAX_NAME_BYTES - 64]}-{hashlib.sha256(stem.encode()).hexdigest()[:12]}"
    if isinstance(map_index, int) and map_index >= 0:
        stem = f"{stem}-{map_index:0{MAP_INDEX_DIGITS}d}"
    return check_file_name(stem)


def has_audio_extension(name: str) -> bool:
    return os.path.splitext(name)[1].lower() in AUDIO_EXTENSIONS


def same_file(name: str) -> str:
    """What two names in a folder are compared by: case folded, an audio extension left out.

    ``intro``, ``Intro.wav`` and ``intro.flac`` are one file: the extension follows the audio.
    """
    base = os.path.splitext(name)[0] if has_audio_extension(name) else name
    return base.lower()


def with_extension(name: str, content_type: str, head: bytes) -> str:
    """``name`` with the extension of the audio that arrived; a contradicting extension is refused."""
    if has_audio_extension(name):
        check_extension(name, content_type, head)
        return name
    return check_file_name(f"{name}{extension_for(content_type, head)}")


def with_format_extension(name: str, extension: str) -> str:
    """``name`` with the extension of a requested format (known before any request), or refused."""
    if not has_audio_extension(name):
        return check_file_name(f"{name}{extension}")
    ext = os.path.splitext(name)[1].lower()
    if ext != ".bin" and same_container(ext) != same_container(extension):
        raise TtsConfigError(
            f"file_name {name!r} says {ext} but the requested format is {extension}; name the file *{extension} "
            "or leave the extension out (it then follows the format)"
        )
    return name
