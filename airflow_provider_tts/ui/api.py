"""The Audio view's FastAPI app, mounted by the api-server (Airflow 3.1+).

Mounted under ``/tts-audio`` (:data:`airflow_provider_tts.ui.plugin.URL_PREFIX`). Routes (every one
behind Airflow's auth manager: the caller must be allowed to read the DAG named by ``dag_id``; an
anonymous caller gets 401, a caller without that DAG 403):

* ``GET /view?dag_id&run_id[&task_id&map_index]``: the page (plain HTML and JavaScript, no build);
* ``GET /entries?dag_id&run_id[&task_id&map_index&status&page&per_page]``: one page of rows and the
  run's totals (:mod:`airflow_provider_tts.ui.entries`);
* ``GET /audio?dag_id&run_id&task_id&map_index&index``: the bytes of one stored file, with range
  requests (``206``, ``Content-Range``), read through the task's own storage connection.

**What can be served.** Only a file the run recorded: the result (XCom ``return_value``) of a task
instance of one of the provider's storing operators, or a stored row of its batch manifest inside
the batch's folder. There is no path parameter. The URI must be under ``[tts] allowed_destinations``
when the deployment sets it, and the object must start like audio. Everything is read in the
api-server through the metadata database and the storage connection the task used (its rendered
``dest_conn_id``): no storage URL, key or signed URL reaches the browser, and the rows carry file
names, not URIs.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

# FastAPI reads the routes' annotations from this module's globals: what they name is imported here.
# This module is imported only by the api-server, on the first request to the view (see ``plugin``).
from airflow.api_fastapi.common.db.common import SessionDep
from fastapi import Query, Request
from fastapi.responses import Response

from airflow_provider_tts.ui.entries import (
    DEFAULT_PER_PAGE,
    FAILED_STATES,
    FILTERS,
    STORING_OPERATORS,
    TaskOutput,
    failed_task_entry,
    find_file,
    is_batch,
    is_one_file,
    manifest_entries,
    one_file_entry,
    page_of,
    parse_manifest,
)

if TYPE_CHECKING:
    from fastapi import FastAPI
    from sqlalchemy.orm import Session

log = logging.getLogger(__name__)

#: The largest manifest the view reads (a 10,000-item manifest is about 4 MB).
MANIFEST_LIMIT = 64 * 1024 * 1024
STATUS_PATTERN = "^(" + "|".join(FILTERS) + ")$"
PAGE = Path(__file__).resolve().parent / "static" / "audio.html"


def resolve_run_id(session: Session, dag_id: str, run_id: str) -> str | None:
    """The id of the run the browser means; None when there is none.

    Airflow 3.1's UI puts the run id into the Audio tab's URL without encoding it, so the ``+`` of a
    manual run's id (``manual__2026-01-01T00:00:00+00:00``) arrives as a space: when no run has the
    id as given, the same id with its spaces read as ``+`` is tried.
    """
    from airflow.models.dagrun import DagRun
    from sqlalchemy import select

    for candidate in dict.fromkeys((run_id, run_id.replace(" ", "+"))):
        if session.scalar(select(DagRun.id).where(DagRun.dag_id == dag_id, DagRun.run_id == candidate)) is not None:
            return candidate
    return None


def load_outputs(
    session: Session, dag_id: str, run_id: str, task_id: str | None = None, map_index: int | None = None
) -> list[TaskOutput] | None:
    """The storing operators' task instances of a run with their results; None when the run does not exist."""
    from airflow.models.taskinstance import TaskInstance
    from airflow.models.xcom import XComModel
    from sqlalchemy import select

    if resolve_run_id(session, dag_id, run_id) != run_id:
        return None
    query = select(TaskInstance.task_id, TaskInstance.map_index, TaskInstance.operator, TaskInstance.state).where(
        TaskInstance.dag_id == dag_id,
        TaskInstance.run_id == run_id,
        TaskInstance.operator.in_(sorted(STORING_OPERATORS)),
    )
    xcoms = select(XComModel.task_id, XComModel.map_index, XComModel.value).where(
        XComModel.dag_id == dag_id, XComModel.run_id == run_id, XComModel.key == "return_value"
    )
    if task_id is not None:
        query, xcoms = query.where(TaskInstance.task_id == task_id), xcoms.where(XComModel.task_id == task_id)
        if map_index is not None and map_index >= 0:
            query = query.where(TaskInstance.map_index == map_index)
            xcoms = xcoms.where(XComModel.map_index == map_index)
    values = {(row.task_id, row.map_index): XComModel.deserialize_value(row) for row in session.execute(xcoms)}
    outputs = [
        TaskOutput(row.task_id, row.map_index, row.operator, str(row.state) if row.state else None,
                   values.get((row.task_id, row.map_index)))
        for row in session.execute(query)
    ]  # fmt: skip
    return sorted(outputs, key=lambda out: (out.task_id, out.map_index))


def dest_conn_id(session: Session, dag_id: str, run_id: str, out: TaskOutput) -> str | None:
    """The storage connection the task instance wrote with: its rendered ``dest_conn_id`` (None: the default)."""
    from airflow.models.renderedtifields import RenderedTaskInstanceFields as Rtif
    from sqlalchemy import select

    fields = session.scalar(
        select(Rtif.rendered_fields).where(
            Rtif.dag_id == dag_id, Rtif.run_id == run_id, Rtif.task_id == out.task_id, Rtif.map_index == out.map_index
        )
    )
    value = fields.get("dest_conn_id") if isinstance(fields, dict) else None
    return value if isinstance(value, str) and value and value != "None" else None


def storage_path(uri: str, conn_id: str | None) -> Any:
    """The object at ``uri`` through ``conn_id``, refused outside ``[tts] allowed_destinations``."""
    from airflow.sdk import ObjectStoragePath

    from airflow_provider_tts.confinement import DESTINATIONS, confine

    confine(uri, DESTINATIONS, what="the audio view's object")
    return ObjectStoragePath(uri, conn_id=conn_id)


def manifest_rows(session: Session, dag_id: str, run_id: str, out: TaskOutput) -> list[dict[str, Any]] | None:
    """The rows of a batch task's manifest; None when it cannot be read (the view says so)."""
    from airflow_provider_tts.objects import read_small

    try:
        path = storage_path(out.result["manifest"], dest_conn_id(session, dag_id, run_id, out))
        data = read_small(path, MANIFEST_LIMIT)
    except Exception as exc:  # one unreadable manifest must not hide the rest of the run
        log.warning("Audio view: cannot read the manifest of %s[%s]: %s", out.task_id, out.map_index,
                    type(exc).__name__)  # fmt: skip
        return None
    return parse_manifest(data) if data is not None else None


def run_entries(session: Session, dag_id: str, run_id: str, outputs: list[TaskOutput]) -> list[dict[str, Any]]:
    entries: list[dict[str, Any]] = []
    for out in outputs:
        if is_one_file(out.result):
            entries.append(one_file_entry(out))
        elif is_batch(out.result):
            rows = manifest_rows(session, dag_id, run_id, out)
            if rows is None:
                entry = failed_task_entry(out)
                entry["error"] = "the batch's manifest cannot be read by the api-server"
                entries.append(entry)
            else:
                entries.extend(manifest_entries(out, rows))
        elif out.state in FAILED_STATES:
            entries.append(failed_task_entry(out))
    return entries


def create_app() -> FastAPI:
    """Build the app. Called by the api-server on the first request (see :mod:`~.plugin`), not at import."""
    from airflow.api_fastapi.app import get_auth_manager
    from airflow.api_fastapi.auth.managers.models.resource_details import DagAccessEntity
    from airflow.api_fastapi.core_api.security import requires_access_dag
    from fastapi import Depends, FastAPI, HTTPException
    from fastapi.responses import HTMLResponse, JSONResponse, StreamingResponse

    from airflow_provider_tts.exceptions import TtsConfigError
    from airflow_provider_tts.ui import streaming

    app = FastAPI(title="Text-to-speech audio view", docs_url=None, redoc_url=None, openapi_url=None)
    # Airflow's dependencies look the auth manager up on the app that serves the request: this one.
    app.state.auth_manager = get_auth_manager()
    read_run = [Depends(requires_access_dag("GET", DagAccessEntity.RUN))]
    read_xcom = [Depends(requires_access_dag("GET", DagAccessEntity.XCOM))]
    no_store = {"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"}

    @app.get("/view", dependencies=read_run, response_class=HTMLResponse)
    def view(dag_id: str, run_id: str) -> HTMLResponse:
        return HTMLResponse(PAGE.read_text(encoding="utf-8"), headers=no_store)

    @app.get("/entries", dependencies=read_xcom)
    def entries(
        session: SessionDep,
        dag_id: str,
        run_id: str,
        task_id: str | None = None,
        map_index: int | None = None,
        status: Annotated[str, Query(pattern=STATUS_PATTERN)] = "all",
        page: Annotated[int, Query(ge=1)] = 1,
        per_page: Annotated[int, Query(ge=1, le=500)] = DEFAULT_PER_PAGE,
    ) -> Response:
        run_id = resolve_run_id(session, dag_id, run_id) or ""
        outputs = load_outputs(session, dag_id, run_id, task_id or None, map_index)
        if outputs is None:
            raise HTTPException(404, "no such DAG run")
        body = page_of(run_entries(session, dag_id, run_id, outputs), status=status, page=page, per_page=per_page)
        body.update({"dag_id": dag_id, "run_id": run_id})
        return JSONResponse(body, headers=no_store)

    @app.get("/audio", dependencies=read_xcom)
    def audio(
        request: Request, session: SessionDep, dag_id: str, run_id: str, task_id: str, map_index: int = -1,
        index: int = -1,
    ) -> Response:  # fmt: skip
        run_id = resolve_run_id(session, dag_id, run_id) or ""
        outputs = load_outputs(session, dag_id, run_id, task_id, map_index) or []
        out = next((o for o in outputs if o.map_index == map_index), None)
        if out is None:
            raise HTTPException(404, "no stored audio for this task instance")
        rows = manifest_rows(session, dag_id, run_id, out) if is_batch(out.result) and index >= 0 else None
        uri = find_file(out, index, rows)
        if uri is None:
            raise HTTPException(404, "this run recorded no such file")
        try:
            path = storage_path(uri, dest_conn_id(session, dag_id, run_id, out))
            size = streaming.object_size(path)
            media_type = streaming.media_type_of(streaming.read_head(path))
        except TtsConfigError:
            raise HTTPException(403, "the file is outside [tts] allowed_destinations") from None
        except FileNotFoundError:
            raise HTTPException(404, "the stored file is gone") from None
        except Exception as exc:  # never the storage error's text: it may name buckets, endpoints, keys
            log.warning("Audio view: cannot open %s[%s] #%s: %s", task_id, map_index, index, type(exc).__name__)
            raise HTTPException(502, "the storage cannot be read") from None
        if media_type is None:
            raise HTTPException(415, "the stored file is not audio")
        headers = {**no_store, "Accept-Ranges": "bytes", "Content-Disposition": "inline"}
        try:
            wanted = streaming.parse_range(request.headers.get("range"), size)
        except streaming.RangeNotSatisfiable:
            return Response(status_code=416, headers={**headers, "Content-Range": f"bytes */{size}"})
        if wanted is None:
            headers["Content-Length"] = str(size)
            return StreamingResponse(streaming.chunks(path, 0, size), media_type=media_type, headers=headers)
        first, last = wanted
        headers.update({"Content-Range": f"bytes {first}-{last}/{size}", "Content-Length": str(last - first + 1)})
        return StreamingResponse(
            streaming.chunks(path, first, last - first + 1), status_code=206, media_type=media_type, headers=headers
        )

    return app
