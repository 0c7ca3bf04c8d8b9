"""Operator extra links: a button in Airflow's UI to what a storing task made.

Every storing operator (the one-task operators, ``TtsAudioToStorageOperator``,
``CambTtsStreamToStorageOperator`` and the batch operators) lists :class:`StoredAudioLink`; the
batch operators list :class:`BatchManifestLink` too. The link is where the audio is, in the
storage's own console where there is one:

==================  =====================================================================================
scheme              link
==================  =====================================================================================
``s3``, ``s3a``     the S3 console's page of the object (a folder: the bucket listing at its prefix), in
                    the connection's region (``https://<region>.console.aws.amazon.com/s3/object/...``;
                    without a region the global console, which finds the bucket itself; the China and
                    GovCloud partitions by the region's prefix). A connection with its own endpoint
                    (MinIO, LocalStack, ...) is not AWS: the link is the ``s3://`` URI.
``gs``, ``gcs``     the Cloud Console's object details page (a folder: the bucket browser at its prefix).
``abfs``, ``az``    the URI itself: the Azure portal's page of a blob is addressed by subscription,
                    resource group and account, which neither the URI nor the connection holds.
``file``, local     the ``file://`` URI of the path (percent-encoded).
anything else       the URI without the connection id.
==================  =====================================================================================

Airflow 3.3's UI shows only ``http``/``https`` links as buttons: a ``file://``, ``s3://``
(custom endpoint) or ``abfs://`` link is in the REST API
(``/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/links``) but not on the page (3.0 to
3.2 show it; a browser does not open ``file://`` from a web page). No link ever carries
credentials: no presigned URL, no SAS token, no connection id.

**No vendor page.** Neither Camb.ai nor RevidAPI documents a web page for one task (their task URLs
are API calls, answered with JSON to an API key), so there is no vendor link: a URL that is not
documented is not made up here.

**How the link is kept.** In Airflow 3 the UI never runs this code: the api-server reads the link
from an XCom (``xcom_key``) of the task instance. The operator calls :meth:`StoredAudioLink.persist`
once the object is stored (on a cache hit too: the stored file is still the link), which keeps the
URL on the operator and pushes it as that XCom at once; when the task finishes, the task runner asks
:meth:`~StoredAudioLink.get_link` and writes its answer, the same URL, straight to the metadata
database (bypassing a custom XCom backend). A try that stored nothing has no link.
"""

from __future__ import annotations

import logging
from pathlib import PurePosixPath
from typing import TYPE_CHECKING, Any, ClassVar
from urllib.parse import quote, urlencode

from airflow.sdk import BaseOperatorLink

from airflow_provider_tts.compat import conn_id_of
from airflow_provider_tts.storage.s3 import known_console_facts
from airflow_provider_tts.storage.schemes import LOCAL_SCHEMES, S3_SCHEMES, plain_uri, scheme_of

if TYPE_CHECKING:
    from airflow.sdk import BaseOperator, Context, ObjectStoragePath
    from airflow.sdk.types import TaskInstanceKey

__all__ = ["BatchManifestLink", "PersistedLink", "StoredAudioLink", "link_for", "s3_console_facts", "storage_url"]

log = logging.getLogger(__name__)

#: The schemes of Google Cloud Storage (gcsfs registers both).
GCS_SCHEMES = frozenset({"gs", "gcs"})
#: Console domains of the AWS partitions other than ``aws``, by the prefix of their region names.
AWS_PARTITION_DOMAINS = {"cn-": "amazonaws.cn", "us-gov-": "amazonaws-us-gov.com"}
#: Where the operator keeps its persisted links (``{xcom_key: url}``) for the task runner's final ask.
LINKS_ATTRIBUTE = "tts_links"


def storage_url(uri: str, *, folder: bool = False, region: str | None = None, endpoint_url: str | None = None) -> str:
    """The link to the object (``folder``: the folder) at ``uri``, a URI without a connection id.

    Pure: ``region`` and ``endpoint_url`` are what the S3 connection says (see
    :func:`s3_console_facts`); any other scheme needs nothing but the URI. See the module docstring.
    """
    scheme, sep, rest = uri.partition("://")
    if not sep:
        scheme, rest = "", uri
    scheme = scheme.lower()
    if scheme in LOCAL_SCHEMES:
        return _file_uri(rest, uri)
    bucket, _, key = rest.lstrip("/").partition("/")
    if not bucket:
        return uri
    if folder and key and not key.endswith("/"):
        key += "/"
    if scheme in S3_SCHEMES:
        return uri if endpoint_url else _s3_console(bucket, key, folder=folder, region=region)
    if scheme in GCS_SCHEMES:
        base = "https://console.cloud.google.com/storage/browser"
        if folder or not key:
            return f"{base}/{quote(bucket)}/{quote(key)}".rstrip("/")
        return f"{base}/_details/{quote(bucket)}/{quote(key)}"
    return uri


def _file_uri(path: str, uri: str) -> str:
    local = PurePosixPath(path)
    return local.as_uri() if local.is_absolute() else uri


def _s3_console(bucket: str, key: str, *, folder: bool, region: str | None) -> str:
    domain = "aws.amazon.com"
    if region:
        domain = next((d for prefix, d in AWS_PARTITION_DOMAINS.items() if region.startswith(prefix)), domain)
    host = f"{region}.console.{domain}" if region else f"console.{domain}"
    query: dict[str, str] = {"region": region} if region else {}
    if key:
        query["prefix"] = key
    page = "buckets" if folder or not key else "object"
    url = f"https://{host}/s3/{page}/{quote(bucket)}"
    return f"{url}?{urlencode(query, safe='/', quote_via=quote)}" if query else url


def s3_console_facts(conn_id: str | None) -> tuple[str | None, str | None]:
    """``(region, endpoint_url)`` of an S3 connection, read as Airflow's s3fs filesystem reads them.

    ``(None, None)`` when the Amazon provider is missing or the connection cannot be read: the link
    is then the global console's, which finds the bucket's region itself. Read from the storage
    layer when it built the connection's S3 client in this process (the file was just written
    through it), so a stored file costs no second connection lookup.
    """
    known = known_console_facts(conn_id)
    if known is not None:
        return known
    try:
        from airflow.providers.amazon.aws.hooks.s3 import S3Hook

        config = S3Hook(aws_conn_id=conn_id).conn_config
        return config.region_name or None, config.get_service_endpoint_url(service_name="s3") or None
    except Exception as exc:  # a link is a convenience: it never fails a task that stored its audio
        log.debug("No region or endpoint for the S3 console link of connection %r: %s", conn_id, exc)
        return None, None


def link_for(path: ObjectStoragePath, *, folder: bool = False) -> str:
    """The link to ``path`` (``folder``: a folder), the S3 region and endpoint read from its connection."""
    uri = plain_uri(path)
    region = endpoint_url = None
    if scheme_of(path) in S3_SCHEMES:
        region, endpoint_url = s3_console_facts(conn_id_of(path))
    return storage_url(uri, folder=folder, region=region, endpoint_url=endpoint_url)


class PersistedLink(BaseOperatorLink):
    """A link the operator persists while it runs, read back by the UI from the task's XCom.

    A subclass sets ``name`` (the button's label) and ``key`` (its XCom key, fixed so a renamed
    class still finds the links of earlier runs).
    """

    name: ClassVar[str]
    key: ClassVar[str]

    @property
    def xcom_key(self) -> str:
        return self.key

    @classmethod
    def persist(cls, context: Context, operator: object, path: ObjectStoragePath, *, folder: bool = False) -> str:
        """Keep the link to ``path`` as this task instance's: on the operator, and as its XCom right away.

        Called once ``path`` holds what the task made. Never raises: the audio is stored by then,
        and a link is a convenience. The XCom is pushed only where the operator pushes XComs
        (``do_xcom_push``); the task runner writes the link when the task finishes either way.
        Returns the URL.
        """
        url = link_for(path, folder=folder)
        links: dict[str, str] = getattr(operator, LINKS_ATTRIBUTE, None) or {}
        links[cls.key] = url
        setattr(operator, LINKS_ATTRIBUTE, links)
        push = getattr(context.get("ti"), "xcom_push", None)
        if push is None or not getattr(operator, "do_xcom_push", True):
            return url
        try:
            push(key=cls.key, value=url)
        except Exception as exc:
            log.warning("Could not save the %r link of this task (%s); the task runner saves it at the end", cls.name,
                        exc)  # fmt: skip
        return url

    def get_link(self, operator: BaseOperator, *, ti_key: TaskInstanceKey) -> str:
        """The persisted URL; ``""`` when this try stored nothing.

        Airflow's task runner calls this once the task finished, with the operator that ran: the
        URL it kept answers without a request. Otherwise the XCom is read. Never raises (on Airflow
        3.0 an exception here would fail the finished task).
        """
        url = (getattr(operator, LINKS_ATTRIBUTE, None) or {}).get(self.key)
        if isinstance(url, str):
            return url
        try:
            from airflow.providers.common.compat.sdk import XCom

            value: Any = XCom.get_value(ti_key=ti_key, key=self.key)
        except Exception as exc:
            log.debug("No %r link for %s: %s", self.name, ti_key, exc)
            return ""
        return value if isinstance(value, str) else ""


class StoredAudioLink(PersistedLink):
    """The "Stored audio" button: the object a storing task wrote (a batch: its destination folder).

    Listed by every storing operator. The URL: the S3 console's page of the object in the
    connection's region (the ``s3://`` URI when the connection has its own, non-AWS endpoint), the
    Google Cloud console's object details for ``gs://``, the ``file://`` URI of a local path, the
    URI itself for ``abfs://`` and any other scheme. Persisted as the XCom
    ``tts_link_stored_audio`` once the file is stored, a cache hit included; never a presigned
    URL, never a connection id (see :mod:`airflow_provider_tts.links`).
    """

    name = "Stored audio"
    key = "tts_link_stored_audio"


class BatchManifestLink(PersistedLink):
    """The "Batch manifest" button of the batch operators: the manifest written beside the audio.

    The same URL rules as :class:`StoredAudioLink`; persisted as the XCom ``tts_link_batch_manifest``.
    """

    name = "Batch manifest"
    key = "tts_link_batch_manifest"
