"""One task from text to stored audio: submit, wait in the triggerer, stream into storage.

The most common need, "this text, as an audio file, there", is three tasks with the generic
operators (submit, sensor, store), each naming the connection id and the kind. The operators here
do it in one task,
one class per vendor and kind, named as Airflow names its operators (the vendor, the job, the
destination):

====================================  =========  =================  ==========================
operator                              vendor     kind               required fields
====================================  =========  =================  ==========================
``CambTtsToStorageOperator``          Camb.ai    ``tts``            text, voice_id, language
``CambTextToSoundToStorageOperator``  Camb.ai    ``text-to-sound``  prompt
``RevidTtsToStorageOperator``         RevidAPI   ``tts``            text
``RevidSrtToSpeechToStorageOperator`` RevidAPI   ``srt-to-speech``  srt, subtitles or srt_url
====================================  =========  =================  ==========================

**Why one class per vendor and kind.** :class:`~airflow_provider_tts.operators.tts.TtsSubmitOperator`
accepts the union of every create body, because which vendor it talks to is only known from the
connection at run time. A class that knows its vendor and kind can declare exactly that body's
fields as typed keyword arguments: an editor offers only those, a mistyped or foreign field
(``voice_idd=``) is refused by Airflow when the DAG is parsed ("Invalid arguments were passed"),
and literal values are checked against the vendor's documented model at parse time too. Values
that are templated (Jinja, an XComArg) are checked after rendering, before anything is paid for.

**Built from the existing pieces.** Each class is a
:class:`~airflow_provider_tts.operators.tts.TtsAudioToStorageOperator` whose ``execute`` first
submits through :class:`~airflow_provider_tts.submitting.SubmitOnce` (the very procedure
of ``TtsSubmitOperator``: the request recorded before paying, a retry re-attaching, an uncertain
create stopping) and then delegates to the storage operator's wait and store. So the storage
arguments (``destination``, ``dest_conn_id``, ``overwrite``, ``max_bytes``, ``chunk_bytes``,
``asset_alias``), the wait arguments (``deferrable``, ``timeout``, ``poll_interval``,
``wait_policy``), ``request_retry``, the returned dict, assets and lineage are the storage operator's. The
vendor's facts stay in :mod:`airflow_provider_tts.vendors`; the classes below only declare fields.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import inspect
from collections.abc import Mapping, Sequence
from functools import cached_property
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from airflow_provider_tts.constants import DEFAULT_CONN_IDS
from airflow_provider_tts.costs import check_limit, estimate_and_check, parse_time_check, request_spending
from airflow_provider_tts.exceptions import TtsConfigError
from airflow_provider_tts.fingerprint import request_fingerprint
from airflow_provider_tts.links import StoredAudioLink
from airflow_provider_tts.naming import default_stem, has_audio_extension
from airflow_provider_tts.operators.audio_to_storage import TtsAudioToStorageOperator
from airflow_provider_tts.results import stored_file_result
from airflow_provider_tts.storing import plain_uri
from airflow_provider_tts.submitting import (
    SubmitOnce,
    UncertainSubmitPolicy,
    check_uncertain_policy,
    create_field_name,
    create_fields,
)
from airflow_provider_tts.templating import rendered_later
from airflow_provider_tts.vendors import VendorOf
from airflow_provider_tts.waiting import WaitPolicy

if TYPE_CHECKING:
    from airflow.sdk import Context, ObjectStoragePath, XComArg

    from airflow_provider_tts.cache import RequestCache
    from airflow_provider_tts.status import Kind
    from airflow_provider_tts.storage import StoredAudio
    from airflow_provider_tts.vendors import Vendor

#: The storage operator's templated arguments that stay templated here (not ``tts_task_id`` and
#: ``kind``: this operator submits its own task, of the kind its class names).
_STORAGE_TEMPLATE_FIELDS: tuple[str, ...] = ("destination", "file_name", "tts_conn_id", "dest_conn_id")


class BaseTextToStorageOperator(TtsAudioToStorageOperator):
    """Submit a task of one vendor and kind, wait for it, and stream its audio into storage.

    The base of the one-task operators (see the module docstring); not used directly. A subclass
    sets ``vendor`` and ``tts_kind`` and declares the create body's documented fields as the
    keyword-only arguments of its ``__init__``, which passes them on as ``request_fields=locals()``;
    those names become its templated fields. A name the vendor's model does not document fails when the
    operator is created, as the model forbids unknown fields (checked then, not when the class is
    defined, so that importing the module builds no model).

    :param tts_conn_id: a connection of the class's vendor (default: that vendor's default
        connection id); a connection of the other vendor is refused before anything is paid for.
    :param durable: record each submission so a retry re-attaches and never pays blindly twice.
    :param on_uncertain_submit: ``"fail"`` (default) or ``"resubmit"``, as for ``TtsSubmitOperator``.
    :param max_characters: refuse to send more characters (default: the connection's extra of that
        name, else no limit); a literal text is checked when the DAG is parsed.
    :param max_credits: refuse a request estimated above this (default: the connection's extra);
        needs a price. Both refuse before the create (``TtsBudgetExceededError``, no retries used
        up); see ``docs/howto/costs-and-limits.md``.

    Retries re-attach: a retry after a failed wait or a failed store finds the task its first try
    paid for (task state store on Airflow 3.3+, an Airflow Variable before) and stores that task's
    audio; a cleared task whose text changed submits afresh.
    """

    vendor: ClassVar[type[Vendor]]
    tts_kind: ClassVar[Kind]
    #: The create fields this class takes, in its signature's order (derived from ``__init__``).
    request_field_names: ClassVar[tuple[str, ...]] = ()
    template_fields: Sequence[str] = _STORAGE_TEMPLATE_FIELDS
    ui_color = "#e3eed0"

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "vendor" not in cls.__dict__:
            return  # an intermediate class: nothing declared yet
        names = tuple(
            name
            for name, param in inspect.signature(cls.__init__).parameters.items()
            if param.kind is inspect.Parameter.KEYWORD_ONLY
        )
        cls.request_field_names = names
        cls.template_fields = (*_STORAGE_TEMPLATE_FIELDS, *names)

    def __new__(cls, *args: Any, **kwargs: Any) -> Any:
        """Refuse a mistyped argument by its own name, before Airflow reports another one missing.

        Airflow checks required arguments before unknown ones, so ``CambTtsToStorageOperator(
        voice_idd=20303, ...)`` would fail with "missing keyword argument 'voice_id'", never naming
        the typo. Every name an operator accepts is a parameter of one of its classes' ``__init__``
        (BaseOperator refuses the rest) or a wait setting the storage operator takes from
        ``**kwargs``; anything else fails here, as Airflow's own check would, naming it and the
        closest valid name. (Airflow's internal arguments start with ``_`` and pass.)
        """
        accepted = _accepted_arguments(cls)
        unknown = [name for name in kwargs if not name.startswith("_") and name not in accepted]
        if unknown:
            fields = ", ".join(cls.request_field_names)
            named = "; ".join(_unknown_argument(name, accepted) for name in unknown)
            raise TypeError(
                f"Invalid arguments were passed to {cls.__name__} (task_id: {kwargs.get('task_id')}): {named}. "
                f"Its {cls.vendor.api} {cls.tts_kind} fields are: {fields}"
            )
        return super().__new__(cls)

    def __init__(
        self,
        *,
        request_fields: Mapping[str, Any],
        tts_conn_id: str | None = None,
        durable: bool = True,
        on_uncertain_submit: UncertainSubmitPolicy = "fail",
        reuse_cached: bool = True,
        max_characters: int | None = None,
        max_credits: float | None = None,
        **kwargs: Any,
    ) -> None:
        owner = type(self).__name__
        if not isinstance(reuse_cached, bool):
            raise TtsConfigError(f"reuse_cached must be True or False, got {reuse_cached!r}")
        for name in ("tts_task_id", "kind", "submitted"):
            if name in kwargs:  # the storage operator's, but this operator decides them itself
                raise TypeError(
                    f"{owner} got an unexpected keyword argument {name!r}: it submits its own "
                    f"{self.vendor.api} {self.tts_kind} task (use TtsAudioToStorageOperator to store an existing one)"
                )
        super().__init__(
            tts_task_id="",  # known once execute() has submitted
            kind=self.tts_kind,
            tts_conn_id=tts_conn_id if tts_conn_id is not None else DEFAULT_CONN_IDS[self.vendor.api],
            **kwargs,
        )
        missing = [name for name in self.request_field_names if name not in request_fields]
        if missing:  # a subclass that passed on something other than its arguments
            raise TypeError(f"{owner} does not pass on its fields {missing}")
        self.durable = durable
        self.on_uncertain_submit = check_uncertain_policy(on_uncertain_submit)
        self.reuse_cached = reuse_cached
        self.max_characters = check_limit("max_characters", max_characters)
        self.max_credits = check_limit("max_credits", max_credits)
        for name in self.request_field_names:
            setattr(self, name, request_fields[name])
        # Literal values fail now, when the DAG is parsed; templated ones after rendering.
        pending = {name for name in self.request_field_names if rendered_later(getattr(self, name))}
        literal = {name: getattr(self, name) for name in self.request_field_names if name not in pending}
        body = self.vendor.validate_create(
            self.tts_kind, create_fields(literal), pending={create_field_name(name) for name in pending}
        )
        if not pending:  # a literal text over the operator's max_characters fails now too
            parse_time_check(self.vendor.spoken_characters(self.tts_kind, body), self)

    def create_fields(self) -> dict[str, Any]:
        """The vendor create body's fields from the (rendered) arguments; SRT text becomes cues."""
        return create_fields({name: getattr(self, name) for name in self.request_field_names})

    @cached_property
    def submitter(self) -> SubmitOnce:
        """The submit procedure of ``TtsSubmitOperator``: validation, ledger, re-attach, uncertain rule."""
        return SubmitOnce(
            self.hook,
            kind=self.tts_kind,
            policy=self.policy,
            durable=self.durable,
            on_uncertain_submit=self.on_uncertain_submit,
            log=self.log,
            api=self.vendor.api,
            owner=type(self).__name__,
        )

    def execute(self, context: Context) -> dict[str, Any]:
        self._check_before_paying(context)  # a bad destination or file name fails before anything is paid for
        if self.reuse_cached:
            cached = self._from_cache(context)
            if cached is not None:
                return cached
        if self.hook.vendor.api == self.vendor.api:  # another vendor's connection: the submit refuses it
            what = f"{self.vendor.api} {self.tts_kind} task {self.task_id!r}"
            estimate_and_check(self.hook.vendor, self.tts_kind, self._spending()["characters"], log=self.log,
                               max_characters=self.max_characters, max_credits=self.max_credits, what=what)  # fmt: skip
        self.tts_task_id, ledger = self.submitter.submit(context, self.create_fields())
        stored = self._wait_and_store(context)
        self.submitter.finished(ledger)
        return stored

    def execute_complete(
        self, context: Context, event: dict[str, Any] | None = None, tts_task_id: str | None = None
    ) -> dict[str, Any]:
        """Resume after the wait in the triggerer: store the audio, then close the submission's record.

        The id normally arrives in the deferral's kwargs. ``dag.test()`` (Airflow 3.3) resumes with
        the trigger's event alone and drops those kwargs, so without them the id is the one this
        task instance's submission record holds: the task it paid for, never one an event names.
        """
        if tts_task_id is None:
            ledger = self.submitter.ledger(context)
            record = ledger.load() if ledger is not None else None
            tts_task_id = record.tts_task_id if record is not None else None
        stored = super().execute_complete(context, event, tts_task_id)
        self.submitter.finished(self.submitter.ledger(context))
        return stored

    # ------------------------------------------------------------------ the request cache

    def _request_fingerprint(self) -> str:
        """The request as the cache knows it: the fields given, not the reference the submit adds per run."""
        body = self.vendor.validate_create(self.tts_kind, self.create_fields())
        return request_fingerprint(self.vendor.api, self.tts_kind, body)

    def _spending(self) -> dict[str, Any]:
        """What the result reports as spent: this request's characters, one create call, the estimate."""
        body = self.vendor.validate_create(self.tts_kind, self.create_fields())
        return request_spending(self.hook.vendor, self.tts_kind, body)

    def _request_cache(self, context: Context, folder: ObjectStoragePath) -> RequestCache:
        from airflow_provider_tts.cache import RequestCache
        from airflow_provider_tts.submissions import SubmitIdentity

        identity = SubmitIdentity.from_context(context)
        return RequestCache(folder, self.hook.endpoint(), identity.digest() if identity is not None else "manual")

    def _from_cache(self, context: Context) -> dict[str, Any] | None:
        """The stored-file result when the destination already holds audio of this very request.

        Found by the request, wherever it is in the folder: at this task's own file it is used as
        it is; elsewhere (another task's file, an earlier name) it is copied to this task's file,
        with no vendor call.
        """
        from airflow_provider_tts.objects import copy_object
        from airflow_provider_tts.storage import StoredAudio, extension_for

        destination, folder = self._checked_destination()
        fingerprint = self._request_fingerprint()
        requests = self._request_cache(context, destination if folder else destination.parent)
        hit, _ = requests.find(fingerprint)
        if hit is None:
            return None
        target = destination
        if folder:
            stem = self._given_name(True) or default_stem(context, self.task_id)
            target = destination / (stem if has_audio_extension(stem) else f"{stem}{extension_for(hit.content_type)}")
        if target.path != hit.path.path:
            etag = copy_object(hit.path, target)
            copied = StoredAudio(plain_uri(target), hit.size_bytes, hit.sha256, hit.content_type,
                                 hit.duration_seconds, "", True, etag)  # fmt: skip
            requests.stored(fingerprint, target, copied, credits=hit.credits)
            self.log.info("Copied the audio of request %s from %s to %s; nothing was paid for", fingerprint,
                          hit.uri, plain_uri(target))  # fmt: skip
        else:
            self.log.info("%s already holds the audio of request %s; nothing was paid for", hit.uri, fingerprint)
        result = stored_file_result(hit, uri=plain_uri(target), tts_task_id=None, fingerprint=fingerprint, cached=True)
        self.stored_audio = result
        StoredAudioLink.persist(context, self, target)
        self._emit_asset(context, result)
        return result

    def _stored_at(self, context: Context, path: ObjectStoragePath, stored: StoredAudio) -> None:
        """Record the audio of this request in the folder's request cache, for the next run."""
        self._request_cache(context, path.parent).stored(self._request_fingerprint(), path, stored)


@functools.cache
def _accepted_arguments(cls: type) -> frozenset[str]:
    """Every keyword argument ``cls(...)`` accepts: its classes' ``__init__`` parameters and the wait settings."""
    names = {field.name for field in dataclasses.fields(WaitPolicy)} | {"wait_timeout"}  # taken from **kwargs
    for klass in cls.__mro__:
        init = klass.__dict__.get("__init__")
        if init is None or klass is object:
            continue
        names.update(
            name
            for name, param in inspect.signature(init).parameters.items()
            if param.kind not in (inspect.Parameter.VAR_KEYWORD, inspect.Parameter.VAR_POSITIONAL)
        )
    return frozenset(names - {"self", "request_fields"})


def _unknown_argument(name: str, accepted: frozenset[str]) -> str:
    close = difflib.get_close_matches(name, sorted(accepted), n=1)
    return f"{name!r}" + (f" (did you mean {close[0]!r}?)" if close else "")


class CambTtsToStorageOperator(BaseTextToStorageOperator):
    """Speak ``text`` with Camb.ai's ``/tts`` and store the audio: submit, wait, stream, in one task.

    The fields are the documented ``POST /tts`` body (all templated):

    :param text: the words to speak.
    :param voice_id: an integer voice id from Camb's voice list, e.g. ``20303``.
    :param language: a BCP-47 tag such as ``en-us`` (sent as Camb's integer id) or the id itself (``1``).
    :param gender: ``0``, ``1``, ``2`` or ``9``.
    :param age: the speaker's age, 0-150.
    :param project_name: Camb project name.
    :param project_description: Camb project description.
    :param folder_id: Camb folder id.

    Every other argument is :class:`~airflow_provider_tts.operators.tts.TtsAudioToStorageOperator`'s
    (``destination``, ``dest_conn_id``, ``overwrite``, ``deferrable``, ``timeout``,
    ``poll_interval``, ``wait_policy``, ``request_retry``, ...) or
    :class:`~airflow_provider_tts.operators.text_to_storage.BaseTextToStorageOperator`'s
    (``tts_conn_id``, default ``camb_ai_default``; ``durable``; ``on_uncertain_submit``). Returns
    the stored-file result, as every storing operator does (table: ``docs/results.md``); on a
    request-cache hit ``cached`` is True, ``credits`` 0 and ``tts_task_id`` None.
    """

    vendor = VendorOf("camb_ai")
    tts_kind = "tts"

    def __init__(
        self,
        *,
        text: str | XComArg,
        voice_id: int | str,
        language: int | str,
        gender: Literal[0, 1, 2, 9] | None = None,
        age: int | None = None,
        project_name: str | None = None,
        project_description: str | None = None,
        folder_id: int | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(request_fields=locals(), **kwargs)


class CambTextToSoundToStorageOperator(BaseTextToStorageOperator):
    """Make a sound from ``prompt`` with Camb.ai's ``/text-to-sound`` and store it, in one task.

    The fields are the documented ``POST /text-to-sound`` body (all templated):

    :param prompt: a description of the sound, e.g. ``"rain on a tin roof"``.
    :param duration: seconds of sound, at most 10.
    :param audio_type: ``"sound"`` or ``"music"``.
    :param project_name: Camb project name.
    :param project_description: Camb project description.
    :param folder_id: Camb folder id.

    Every other argument, and the result, as for :class:`CambTtsToStorageOperator`
    (``tts_conn_id`` defaults to ``camb_ai_default``).
    """

    vendor = VendorOf("camb_ai")
    tts_kind = "text-to-sound"

    def __init__(
        self,
        *,
        prompt: str | XComArg,
        duration: float | None = None,
        audio_type: Literal["sound", "music"] | None = None,
        project_name: str | None = None,
        project_description: str | None = None,
        folder_id: int | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(request_fields=locals(), **kwargs)


class RevidTtsToStorageOperator(BaseTextToStorageOperator):
    """Speak ``text`` with RevidAPI's text-to-speech and store the audio, in one task.

    The fields are the documented ``POST /paid/text-to-speech`` body (all templated):

    :param text: the words to speak.
    :param engine: ``"edge"``, ``"capcut"`` or ``"google"``.
    :param voice_id: an integer voice id of the engine.
    :param voice: a voice name of the engine.
    :param speed: 0.5-2.
    :param pitch: -20..20.
    :param webhook_url: an http(s) URL the vendor calls when the task is done.
    :param caller_id: the reference RevidAPI stores with the task (sent as ``id``); by default a
        deterministic one derived from the DAG, run, task and map index, so a duplicate can be found.

    Every other argument, and the result, as for :class:`CambTtsToStorageOperator`
    (``tts_conn_id`` defaults to ``revid_tts_default``).
    """

    vendor = VendorOf("revid_tts")
    tts_kind = "tts"

    def __init__(
        self,
        *,
        text: str | XComArg,
        engine: Literal["edge", "capcut", "google"] | None = None,
        voice_id: int | str | None = None,
        voice: str | None = None,
        speed: float | None = None,
        pitch: float | None = None,
        webhook_url: str | None = None,
        caller_id: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(request_fields=locals(), **kwargs)


class RevidSrtToSpeechToStorageOperator(BaseTextToStorageOperator):
    """Voice an SRT file with RevidAPI's SRT-to-speech and store the audio, in one task.

    The fields are the documented ``POST /paid/srt-to-speech/merge`` body (all templated); exactly
    one of ``srt``, ``subtitles`` and ``srt_url`` is required:

    :param srt: SRT text, parsed here into cues (malformed SRT names the line, before anything is
        sent); an XComArg of a task that reads the file works.
    :param subtitles: the cues themselves: ``[{"index", "start", "end", "text"}, ...]``.
    :param srt_url: an http(s) URL of the SRT file (the vendor's V2 body).
    :param video_url: an http(s) URL of a video to merge the speech into.
    :param engine: ``"edge"``, ``"capcut"`` or ``"google"``.
    :param voice_id: an integer voice id of the engine.
    :param voice: a voice name of the engine.
    :param speed: 0.5-2.
    :param audio_name: the name the vendor gives the audio.
    :param mode: ``"merge"`` or ``"timeline"``.
    :param add_silence: seconds of silence to add, at least 0.
    :param output_format: ``"mp4"``, ``"mp3"`` or ``"wav"``.
    :param webhook_url: an http(s) URL the vendor calls when the task is done.
    :param caller_id: as for :class:`RevidTtsToStorageOperator`.

    Every other argument, and the result, as for :class:`CambTtsToStorageOperator`
    (``tts_conn_id`` defaults to ``revid_tts_default``).
    """

    vendor = VendorOf("revid_tts")
    tts_kind = "srt-to-speech"

    def __init__(
        self,
        *,
        srt: str | XComArg | None = None,
        subtitles: list[dict[str, Any]] | XComArg | None = None,
        srt_url: str | None = None,
        video_url: str | None = None,
        engine: Literal["edge", "capcut", "google"] | None = None,
        voice_id: int | str | None = None,
        voice: str | None = None,
        speed: float | None = None,
        audio_name: str | None = None,
        mode: Literal["merge", "timeline"] | None = None,
        add_silence: float | None = None,
        output_format: Literal["mp4", "mp3", "wav"] | None = None,
        webhook_url: str | None = None,
        caller_id: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(request_fields=locals(), **kwargs)


__all__ = [
    "BaseTextToStorageOperator",
    "CambTextToSoundToStorageOperator",
    "CambTtsToStorageOperator",
    "RevidSrtToSpeechToStorageOperator",
    "RevidTtsToStorageOperator",
]
