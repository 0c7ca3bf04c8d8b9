"""What a stored audio file means to Airflow's assets and to OpenLineage.

Two audiences read what :class:`~airflow_provider_tts.operators.tts.TtsAudioToStorageOperator`
stored, and both must see the destination and only it:

* **Airflow assets.** A scheduler can only use an asset it knows before the task runs, so the
  operator declares one *stable* asset at parse time (:func:`default_outlet`): the destination
  itself when it is a literal URI (a folder destination's asset is the folder, not each file in
  it), else a name derived from the DAG and task. Each store then emits one event on that asset
  whose ``extra`` (:func:`asset_event_extra`) carries the file actually written. An asset per
  file would be created at run time, unknown to every scheduled DAG, with a warning each time.
* **OpenLineage.** :func:`operator_lineage` builds the facets the OpenLineage provider asks for
  on completion: the stored object as the one output dataset, named per the OpenLineage naming
  spec (:func:`dataset_name`), the audio size as output statistics, and the vendor job as run
  facets. The temporary object a write may go through is never mentioned.

Nothing here imports the OpenLineage provider at module level: the package works without it, and
:func:`operator_lineage` is only called by that provider.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from airflow_provider_tts.storage.schemes import LOCAL_SCHEMES, plain_uri

if TYPE_CHECKING:
    from airflow.providers.openlineage.extractors import OperatorLineage
    from airflow.sdk import Asset

#: Prefix of the asset name declared for a destination known only at run time.
ASSET_NAME_PREFIX = "tts-audio"

#: Keys of the stored-audio result copied into each asset event's ``extra`` (all JSON values).
EVENT_EXTRA_KEYS: tuple[str, ...] = (
    "uri",
    "size_bytes",
    "sha256",
    "content_type",
    "duration_seconds",
    "tts_task_id",
)

#: Schemes whose OpenLineage namespace is ``<scheme>://<bucket>`` and name the object key.
_BUCKET_SCHEMES = {"s3": "s3", "s3a": "s3", "s3n": "s3", "gs": "gs", "gcs": "gs", "abfs": "abfs", "abfss": "abfss"}


def literal_destination_uri(destination: Any) -> str | None:
    """The destination's URI when it is known at parse time, else None.

    A string is literal when it holds no Jinja and has a scheme; an ``ObjectStoragePath`` is
    always literal (its URI is taken without the connection id, as XCom carries it). Anything
    else (a template, an ``XComArg``) is decided at run time.
    """
    from airflow.sdk import ObjectStoragePath

    if isinstance(destination, ObjectStoragePath):
        return plain_uri(destination)
    if isinstance(destination, str):
        raw = destination.strip()
        if "{{" in raw or "{%" in raw or "://" not in raw:
            return None
        return raw
    return None


def default_asset_name(dag_id: str | None, task_id: str) -> str:
    """The stable asset name for a destination known only at run time: ``tts-audio/<dag>/<task>``.

    Stable across runs and map indexes (every mapped instance of the task updates the same
    asset), unique per task of a DAG. Without a DAG (an operator built outside one) it is
    ``tts-audio/<task>``.
    """
    return "/".join(part for part in (ASSET_NAME_PREFIX, dag_id, task_id) if part)


def default_outlet(destination: Any, dag_id: str | None, task_id: str) -> Asset:
    """The asset a storage task declares when it is given no ``outlets``.

    The literal destination (file or folder, as written: ``file:///data/audio/`` stays the name,
    Airflow drops the trailing slash from the URI), else :func:`default_asset_name`.
    """
    from airflow.sdk import Asset

    uri = literal_destination_uri(destination)
    if uri is not None:
        return Asset(uri)
    return Asset(name=default_asset_name(dag_id, task_id))


class OutletsForTestRuns:
    """Mixin of the storing operators: outlets that ``airflow dags test`` on Airflow 3.0 can run.

    Airflow refuses to start a task whose outlet asset is not active in the metadata database
    (``AirflowInactiveAssetInInletOrOutletException``). A deployment activates every asset when the
    DAG is parsed, and from 3.1 on ``dag.test()`` registers the DAG first; 3.0's ``dag.test()`` does
    not, so there every task with an outlet fails before it starts, and these operators declare one
    by default. Inside a ``dag.test()`` run only, an ``Asset`` outlet the database does not hold as
    active is left out (with a warning naming it), so the task runs and stores its audio; no event is
    emitted for it, which nothing in a test run could consume anyway. Everywhere else ``outlets`` is
    exactly what was declared.
    """

    @property
    def outlets(self) -> list[Any]:
        declared: list[Any] = self.__dict__.get("_declared_outlets", [])
        if not declared:
            return declared
        from airflow_provider_tts.compat import in_dag_test

        if not in_dag_test():
            return declared
        if "_test_run_outlets" not in self.__dict__:
            self.__dict__["_test_run_outlets"] = _active_outlets(declared, getattr(self, "log", None))
        kept: list[Any] = self.__dict__["_test_run_outlets"]
        return kept

    @outlets.setter
    def outlets(self, value: list[Any]) -> None:
        self.__dict__["_declared_outlets"] = value
        self.__dict__.pop("_test_run_outlets", None)


def _active_outlets(outlets: list[Any], log: Any) -> list[Any]:
    """``outlets`` without the assets this ``dag.test()`` database holds no active row for."""
    from airflow.sdk import Asset

    assets = [outlet for outlet in outlets if isinstance(outlet, Asset)]
    if not assets:
        return outlets
    try:
        from airflow.models.asset import AssetActive
        from airflow.utils.session import create_session
        from sqlalchemy import select, tuple_

        keys = [(asset.name, asset.uri) for asset in assets]
        with create_session() as session:
            active = set(
                session.execute(
                    select(AssetActive.name, AssetActive.uri).where(tuple_(AssetActive.name, AssetActive.uri).in_(keys))
                ).all()
            )
    except Exception:  # no database to ask: Airflow itself decides, as without this mixin
        return outlets
    kept = [o for o in outlets if not isinstance(o, Asset) or (o.name, o.uri) in active]
    dropped = [o.uri for o in assets if (o.name, o.uri) not in active]
    if dropped and log is not None:
        log.warning(
            "This dag.test() run has not registered the outlet asset(s) %s (Airflow 3.0's `dags test` registers "
            "none); the task runs without them and emits no asset event. A deployment registers them when the "
            "DAG is parsed.",
            ", ".join(dropped),
        )
    return kept


def asset_event_extra(stored: Mapping[str, Any], kind: str) -> dict[str, Any]:
    """The ``extra`` of the asset event for one stored file: where it is and what it holds."""
    extra = {key: stored[key] for key in EVENT_EXTRA_KEYS if key in stored}
    extra["kind"] = kind
    return extra


def dataset_name(uri: str) -> tuple[str, str]:
    """OpenLineage ``(namespace, name)`` of a stored object, per the OpenLineage naming spec.

    * local file system: namespace ``file``, name the absolute path (``file:///a/b.wav`` ->
      ``("file", "/a/b.wav")``); a file URI naming a host is ``file://<host>``;
    * object stores (S3, GCS, ABFS): namespace ``<scheme>://<bucket>``, name the key without a
      leading slash (``s3://b/audio/x.wav`` -> ``("s3://b", "audio/x.wav")``); ``s3a``/``s3n``
      count as ``s3`` and ``gcs`` as ``gs``;
    * any other scheme: namespace ``<scheme>://<authority>``, name the path.
    """
    parts = urlsplit(uri)
    scheme = parts.scheme.lower()
    if scheme in LOCAL_SCHEMES:
        host = parts.netloc if parts.netloc not in ("", "localhost") else ""
        return (f"file://{host}" if host else "file"), parts.path or "/"
    if scheme in _BUCKET_SCHEMES:
        return f"{_BUCKET_SCHEMES[scheme]}://{parts.netloc}", parts.path.lstrip("/")
    return f"{scheme}://{parts.netloc}", parts.path.lstrip("/") or "/"


def operator_lineage(stored: Mapping[str, Any] | None, *, api: str | None, kind: str) -> OperatorLineage[Any, Any]:
    """OpenLineage facets of a completed store: the stored object, its size, the vendor job.

    ``stored`` is the operator's result (``uri``, ``size_bytes``, ``duration_seconds``,
    ``tts_task_id``, ...); without it (nothing was stored) the lineage is empty. Run facets:
    ``externalQuery`` (the standard facet for a job run by an external system: the vendor task id
    and the API that ran it), ``ttsJob`` (api, kind, task id, audio duration and content type) and
    ``ttsCost`` (:func:`cost_facet`: what the run spent).
    """
    from airflow.providers.openlineage.extractors import OperatorLineage
    from openlineage.client.event_v2 import OutputDataset
    from openlineage.client.facet_v2 import RunFacet, external_query_run, output_statistics_output_dataset

    if not stored or not stored.get("uri"):
        return OperatorLineage()
    namespace, name = dataset_name(str(stored["uri"]))
    output_facets: dict[str, Any] = {}
    if isinstance(stored.get("size_bytes"), int):
        output_facets["outputStatistics"] = output_statistics_output_dataset.OutputStatisticsOutputDatasetFacet(
            size=stored["size_bytes"], fileCount=1
        )
    run_facets: dict[str, Any] = {}
    task_id = stored.get("tts_task_id")
    if task_id and api:
        run_facets["externalQuery"] = external_query_run.ExternalQueryRunFacet(externalQueryId=str(task_id), source=api)
    job = {
        "api": api,
        "kind": kind,
        "ttsTaskId": task_id,
        "audioDurationSeconds": stored.get("duration_seconds"),
        "contentType": stored.get("content_type"),
    }
    run_facets["ttsJob"] = RunFacet().with_additional_properties(
        **{key: value for key, value in job.items() if value is not None}
    )
    run_facets["ttsCost"] = cost_facet(stored)
    return OperatorLineage(
        outputs=[OutputDataset(namespace=namespace, name=name, outputFacets=output_facets)],
        run_facets=run_facets,
    )


#: The ``ttsCost`` run facet's properties, from the result keys of the same meaning.
COST_FACET_KEYS = {
    "characters": "characters",
    "requests": "requests",
    "credits": "credits",
    "estimatedCredits": "estimated_credits",
}


def cost_facet(result: Mapping[str, Any]) -> Any:
    """The ``ttsCost`` custom run facet: ``characters`` sent, paid ``requests``, ``credits`` the vendor
    reported and ``estimatedCredits``, from a storing operator's or a batch's result; unknown ones left out."""
    from openlineage.client.facet_v2 import RunFacet

    values = {name: result.get(key) for name, key in COST_FACET_KEYS.items()}
    return RunFacet().with_additional_properties(**{k: v for k, v in values.items() if v is not None})


def batch_lineage(summary: Mapping[str, Any] | None, *, api: str, kind: str) -> OperatorLineage[Any, Any]:
    """OpenLineage facets of a finished batch: its folder as the output, ``ttsJob`` and ``ttsCost`` run facets."""
    from airflow.providers.openlineage.extractors import OperatorLineage
    from openlineage.client.event_v2 import OutputDataset
    from openlineage.client.facet_v2 import RunFacet, output_statistics_output_dataset

    if not summary or not summary.get("destination"):
        return OperatorLineage()
    namespace, name = dataset_name(str(summary["destination"]))
    files = int(summary.get("stored") or 0) + int(summary.get("cached") or 0)
    statistics = output_statistics_output_dataset.OutputStatisticsOutputDatasetFacet(fileCount=files)
    job = {"api": api, "kind": kind, "items": summary.get("items"), "failed": summary.get("failed")}
    return OperatorLineage(
        outputs=[OutputDataset(namespace=namespace, name=name, outputFacets={"outputStatistics": statistics})],
        run_facets={
            "ttsJob": RunFacet().with_additional_properties(**{k: v for k, v in job.items() if v is not None}),
            "ttsCost": cost_facet(summary),
        },
    )
