"""Planning a batch: every item read, validated and given its identity, file and request.

:class:`PlanPhase` is the first phase of the batch operator
(:class:`~airflow_provider_tts.batch.operator.BaseTextBatchToStorageOperator`): it reads every
item, merges it over ``defaults``, validates it against the vendor's documented body and checks
keys and file names are unique, so any mistake fails before anything is paid for or written. A
request repeated without a key is one item (its other positions are its ``duplicates``). The
result, :class:`BatchPlan`, is what the submit and store phases work from; it holds no text.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from airflow_provider_tts.batch.items import (
    BatchItem,
    CsvRow,
    item_parts,
    item_stem,
    items_digest,
    iter_items,
    typed_cells,
)
from airflow_provider_tts.batch.manifest import check_manifest_name
from airflow_provider_tts.batch.record import BatchRecord
from airflow_provider_tts.confinement import DESTINATIONS, ITEMS_PATHS, confine
from airflow_provider_tts.exceptions import TtsConfigError
from airflow_provider_tts.fingerprint import fingerprint_hex, request_fingerprint
from airflow_provider_tts.naming import has_audio_extension, same_file
from airflow_provider_tts.objects import listed
from airflow_provider_tts.storage import TtsStorageError, check_destination, destination_path
from airflow_provider_tts.storing import plain_uri
from airflow_provider_tts.submissions import SubmitIdentity
from airflow_provider_tts.submitting import create_field_name, create_fields
from airflow_provider_tts.templating import rendered_later

if TYPE_CHECKING:
    from airflow.sdk import Context, ObjectStoragePath
    from airflow.sdk.types import Logger

    from airflow_provider_tts.batch.items import FileNameStyle
    from airflow_provider_tts.cache import CachedAudio, RequestCache
    from airflow_provider_tts.hooks.tts import TtsHook
    from airflow_provider_tts.status import Kind
    from airflow_provider_tts.storage import OverwritePolicy
    from airflow_provider_tts.submitting import UncertainSubmitPolicy
    from airflow_provider_tts.vendors import Vendor


@dataclass
class BatchPlan:
    """Every item of the batch, validated, and where its audio and its requests' state go."""

    items: list[BatchItem]
    folder: ObjectStoragePath
    record: BatchRecord
    identity: SubmitIdentity | None
    cache: RequestCache
    digest: str
    #: The item key at each position (1-based positions: ``keys[i - 1]``).
    keys: list[str]
    #: Keys of the items that name their file themselves (a ``key`` or a ``file_name``).
    explicit: frozenset[str] = frozenset()
    names: frozenset[str] = field(default_factory=frozenset)

    @property
    def requests(self) -> list[str]:
        """The distinct requests (fingerprints), in item order: what is paid for, once each."""
        return list(dict.fromkeys(item.fingerprint for item in self.items))


def item_key(key: str | None, file_name: str | None, fingerprint: str) -> str:
    """An item's identity: its ``key``, else its ``file_name``, else its request (never its position)."""
    if key is not None:
        return key
    if file_name is not None:
        return file_name
    return fingerprint_hex(fingerprint)[:16]


class PlanPhase:
    """The batch operator's validation and planning (a mixin of the operator, never used alone)."""

    if TYPE_CHECKING:
        # Set by the operator's class and ``__init__``, or provided by Airflow's ``BaseOperator``.
        vendor: ClassVar[type[Vendor]]
        tts_kind: ClassVar[Kind]
        item_field: ClassVar[str]
        items: Any
        items_path: Any
        items_conn_id: str | None
        defaults: Any
        file_names: FileNameStyle
        destination: Any
        dest_conn_id: str | None
        overwrite: OverwritePolicy
        reuse_cached: bool
        retry_failed_items: bool
        max_failed_items: int | None
        max_active_requests: int
        manifest_name: str
        on_uncertain_submit: UncertainSubmitPolicy
        task_id: str
        max_characters: int | None
        max_credits: float | None
        max_bytes: int
        chunk_bytes: int
        manifest_task_ids: bool
        outlets: list[Any]

        @property
        def log(self) -> Logger: ...

        @property
        def hook(self) -> TtsHook: ...

    def _check_defaults(self, defaults: Any) -> dict[str, Any]:
        """``defaults`` as create fields, or an error naming the field the vendor does not document."""
        if not isinstance(defaults, Mapping):
            raise TtsConfigError(f"defaults rendered to {defaults!r:.80}; expected a dict of create fields")
        documented = self.vendor.create_model(self.tts_kind).model_fields
        reference = self.vendor.client_reference_field
        for name in defaults:
            if create_field_name(name) not in documented or name in ("caller_id", reference):
                raise TtsConfigError(
                    f"{type(self).__name__}: defaults has {name!r}, which is not a shared {self.vendor.api} "
                    f"{self.tts_kind} field; expected some of {', '.join(n for n in documented if n != reference)}"
                )
        literal = {name: value for name, value in defaults.items() if not rendered_later(value)}
        pending = {name for name in documented if create_field_name(name) not in map(create_field_name, literal)}
        self.vendor.validate_create(self.tts_kind, create_fields(literal), pending=pending)
        return dict(defaults)

    def _batch_folder(self, context: Context) -> Any:
        """The folder the items' audio, request cache and manifest go to: ``destination`` here.

        The long-text operators put their parts in a hidden folder beside the joined file instead.
        """
        return self.destination

    def _source(self) -> ObjectStoragePath | None:
        if self.items_path is None:
            return None
        source = destination_path(self.items_path, self.items_conn_id or None)
        confine(plain_uri(source), ITEMS_PATHS, what="items_path")
        return source

    def _raw_items(self) -> Iterator[Any]:
        return iter_items(self.items, self._source())

    def _item(self, raw: Any, index: int, defaults: Mapping[str, Any]) -> tuple[str | None, str | None, dict[str, Any]]:
        """``(key, file name, create fields)`` of one raw item; a CSV row's cells typed for the vendor."""
        key, file_name, merged = item_parts(raw, index, item_field=self.item_field, defaults=defaults)
        try:
            fields = create_fields(merged)
        except TtsConfigError as exc:
            raise TtsConfigError(f"item {index} ({key or 'no key'}): {exc}") from None
        if isinstance(raw, CsvRow):
            fields = typed_cells(fields, self.vendor.create_model(self.tts_kind))
        return key, file_name, fields

    def _fingerprint(self, index: int, key: str | None, fields: Mapping[str, Any]) -> tuple[str, int | None]:
        """The request's fingerprint and spoken characters, validating the fields (the error names the item)."""
        try:
            body = self.vendor.validate_create(self.tts_kind, fields)
        except TtsConfigError as exc:
            raise TtsConfigError(f"item {index} ({key or 'no key'}): {exc}") from None
        return request_fingerprint(self.vendor.api, self.tts_kind, body), self.vendor.spoken_characters(
            self.tts_kind, body
        )

    def _plan(self, context: Context) -> BatchPlan:
        """Validate every item and the destination; nothing is paid for or written before this passes."""
        defaults = self._check_defaults(self.defaults)
        check_manifest_name(self.manifest_name)
        folder = destination_path(self._batch_folder(context), self.dest_conn_id or None)
        confine(plain_uri(folder), DESTINATIONS, what="destination")
        try:
            if not check_destination(folder, folder_hint=True):
                raise TtsConfigError(f"destination {plain_uri(folder)} must be a folder")
        except OSError as exc:
            raise TtsStorageError(f"cannot prepare {plain_uri(folder)}: {type(exc).__name__}: {exc}") from exc
        by_key: dict[str, BatchItem] = {}
        stems: dict[str, str] = {}  # same_file(stem) -> "<index> (<key>)" of the item stored there
        keys: list[str] = []
        explicit: set[str] = set()
        for index, raw in enumerate(self._raw_items(), start=1):
            given_key, file_name, fields = self._item(raw, index, defaults)
            fingerprint, characters = self._fingerprint(index, given_key, fields)
            key = item_key(given_key, file_name, fingerprint)
            if key in by_key:
                first = by_key[key]
                if given_key is not None or file_name is not None or first.fingerprint != fingerprint:
                    raise TtsConfigError(
                        f"item {index} repeats key {key!r} of item {first.index}; every item needs its own key"
                    )
                first.duplicates = (*first.duplicates, index)  # the same request again: one item
                keys.append(key)
                continue
            stem = item_stem(
                key=given_key, file_name=file_name, text=fields.get(self.item_field), fingerprint=fingerprint,
                style=self.file_names,
            )  # fmt: skip
            if same_file(stem) in stems:
                raise TtsConfigError(
                    f"item {index} ({key}) would be stored as {stem!r} like item {stems[same_file(stem)]}; give "
                    "each item its own file_name or key"
                )
            stems[same_file(stem)] = f"{index} ({key})"
            by_key[key] = BatchItem(index, key, stem, fingerprint, characters=characters)
            keys.append(key)
            if given_key is not None or file_name is not None:
                explicit.add(key)
        if not by_key:
            raise TtsConfigError(f"{type(self).__name__} got no items; expected at least one text")
        items = list(by_key.values())
        identity = SubmitIdentity.from_context(context)
        owner = identity.digest() if identity is not None else "manual"
        # One LIST of the folder serves the overwrite check, the 0.1 sidecar search and, on S3, the
        # confirmation of each cached item's audio (its listed size and ETag: no HEAD per item).
        found = listed(folder)
        from airflow_provider_tts.cache import RequestCache  # at run time: a DAG parse needs no cache

        request_cache = RequestCache(folder, self.hook.endpoint(), owner, listed=found)
        return BatchPlan(items, folder, BatchRecord.for_task(folder, identity), identity, request_cache,
                         items_digest(items), keys, frozenset(explicit), frozenset(found))  # fmt: skip

    def _refuse_overwrites(self, plan: BatchPlan, hits: Mapping[str, CachedAudio | None]) -> None:
        """``overwrite="fail"``: a file in the way of an item that would be written is refused before paying."""
        if self.overwrite != "fail":
            return
        taken = {same_file(name): name for name in plan.names if has_audio_extension(name)}
        for item in plan.items:
            hit = hits.get(item.fingerprint)
            if hit is not None and same_file(hit.path.name) == same_file(item.stem):
                continue  # its own audio: nothing is written
            if hit is not None and item.key not in plan.explicit:
                continue  # used where it is
            if same_file(item.stem) in taken:
                raise TtsConfigError(
                    f"item {item.index} ({item.key}) would be stored as {taken[same_file(item.stem)]!r}, which "
                    f"{plain_uri(plan.folder)} already holds, and overwrite='fail'; nothing was paid for"
                )
