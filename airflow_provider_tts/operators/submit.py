"""``TtsSubmitOperator``: create a remote text-to-speech task once per task instance, return its id.

The operator validates every field against the vendor's documented create body, then pays through
:class:`~airflow_provider_tts.submitting.SubmitOnce`: on Airflow 3.3+ the request is recorded in the
``task_state_store`` before the create call and the vendor's task id right after, so a retry (a
killed worker, a failed wait) re-attaches to the task it already paid for instead of creating
another. With ``wait=True`` it also waits for the task (deferring like the sensor).

:func:`from_submitted` is how a downstream sensor or storage task reads the task id, connection id
and kind from the ``TtsSubmitOperator`` it follows, when the DAG is parsed.
"""

from __future__ import annotations

import inspect
import time
from collections.abc import Mapping, Sequence
from functools import cached_property
from typing import TYPE_CHECKING, Any, Literal

from airflow.sdk import BaseOperator

from airflow_provider_tts.compat import conf
from airflow_provider_tts.constants import DEFAULT_CONN_IDS, KINDS
from airflow_provider_tts.exceptions import TtsConfigError
from airflow_provider_tts.hooked import TtsHookMixin
from airflow_provider_tts.renames import request_retry_overrides
from airflow_provider_tts.submitting import SubmitOnce, check_uncertain_policy, create_fields
from airflow_provider_tts.templating import templated
from airflow_provider_tts.waiting import Waiter, WaitPolicy, wait_sync, wait_timeout

if TYPE_CHECKING:
    from datetime import timedelta

    from airflow.sdk import Context, XComArg

    from airflow_provider_tts.submissions import SubmitLedger


class TtsSubmitOperator(TtsHookMixin, BaseOperator):
    """Create a remote text-to-speech task and return its vendor task id (XCom).

    Required fields, by connection type and ``kind`` (everything else is optional):

    * Camb.ai ``tts``: ``text``; ``voice_id``, an integer voice id from Camb's voice list (e.g.
      ``20303``); ``language``, a BCP-47 tag (``en-us``) or Camb's integer language id (``1``).
    * Camb.ai ``text-to-sound``: ``prompt``.
    * RevidAPI ``tts``: ``text``.
    * RevidAPI ``srt-to-speech``: exactly one of ``srt`` (SRT text, parsed here into cues;
      malformed SRT names the line), ``subtitles`` (a cue list) or ``srt_url``.

    Optional fields follow each vendor's documented create body. Camb.ai ``tts``: ``gender``
    (0, 1, 2 or 9), ``age``, ``project_name``, ``project_description``, ``folder_id``. Camb.ai
    ``text-to-sound``: ``duration`` (seconds, at most 10), ``audio_type`` (``sound``/``music``),
    and the project fields. RevidAPI ``tts``: ``engine`` (``edge``/``capcut``/``google``),
    ``voice_id`` or ``voice``, ``speed`` (0.5-2), ``pitch`` (-20..20), ``webhook_url``,
    ``caller_id`` (sent as ``id``). RevidAPI ``srt-to-speech``: ``voice_id``, ``speed``,
    ``audio_name``, ``mode`` (``merge``/``timeline``), ``add_silence``, ``engine``, ``voice``,
    ``output_format`` (``mp4``/``mp3``/``wav``), ``video_url``. Every input is validated before
    anything is recorded or sent: a missing field is named, nothing invalid is paid for.

    **Paying once.** With ``durable=True`` (the default) the operator records, per task instance,
    the request's fingerprint *before* the create call and the vendor task id right after it
    (:mod:`airflow_provider_tts.submissions`: the task state store on Airflow 3.3+, an Airflow
    Variable before). A later try of the same task instance then:

    * re-attaches to the recorded task while it is pending or succeeded and the request is
      unchanged ("not found" within the 30 s grace of its creation counts as pending: the vendor
      may not have indexed it yet); a failed task, or a request edited since (a cleared task whose
      text changed), is submitted afresh;
    * finds an intent without a task id when an earlier create's answer never arrived (a worker
      killed mid-call, a 502 or a read timeout after sending). The vendor may have created and
      billed that task, so by default (``on_uncertain_submit="fail"``) the task fails without
      using up its retries, saying what to check. A create failing that way in the current try
      fails the same way: retrying would only run into the same unknown.

    RevidAPI stores a caller's reference with each task: unless ``caller_id`` is given, the
    operator sends a deterministic one derived from the DAG, run, task and map index (never the
    try number), which the error message quotes so a duplicate can be found. Camb.ai has none.

    :param tts_conn_id: a ``camb_ai`` or ``revid_tts`` connection (templated).
    :param kind: ``tts``, ``text-to-sound`` (Camb.ai) or ``srt-to-speech`` (RevidAPI).
    :param wait: also wait for the task to finish (deferring like the sensor when ``deferrable``);
        the operator still returns the task id.
    :param deferrable: with ``wait``, wait in the triggerer; defaults to ``[operators] default_deferrable``.
    :param timeout: with ``wait``, how long to wait before failing: seconds or a ``timedelta``
        (default 1 hour; ``wait_timeout``, its old name, still works with a deprecation warning).
    :param poll_interval: with ``wait``, seconds (or a ``timedelta``) between polls at first.
    :param wait_policy: with ``wait``, the other wait settings; see
        :class:`~airflow_provider_tts.waiting.WaitPolicy` (its fields may also be passed by name).
    :param request_retry: overrides of the connection's retry settings for each HTTP request
        (``max_retries``, ``backoff``, ``max_backoff``); the task's own retries stay ``retries``.
    :param retry: the deprecated spelling of ``request_retry`` (a warning says so).
    :param durable: record each submission so retries re-attach and never pay blindly twice.
    :param on_uncertain_submit: ``"fail"`` (default) stops when an earlier create's outcome is
        unknown; ``"resubmit"`` sends the request again instead (and may pay twice), for pipelines
        where a duplicate costs less than a stop. With ``"resubmit"`` an ambiguous create failure
        stays retryable, so Airflow's retry resubmits.
    """

    template_fields: Sequence[str] = (
        "tts_conn_id", "kind", "text", "prompt", "srt", "subtitles", "srt_url", "voice", "voice_id", "language",
        "project_name", "project_description", "audio_name", "webhook_url", "caller_id",
    )  # fmt: skip
    ui_color = "#fbe3c9"

    def __init__(
        self,
        *,
        tts_conn_id: str = DEFAULT_CONN_IDS["camb_ai"],
        kind: str = "tts",
        wait: bool = False,
        deferrable: bool = conf.getboolean("operators", "default_deferrable", fallback=False),
        timeout: float | timedelta | None = None,
        poll_interval: float | timedelta | None = None,
        wait_policy: WaitPolicy | None = None,
        request_retry: Mapping[str, Any] | None = None,
        retry: Mapping[str, Any] | None = None,
        durable: bool = True,
        on_uncertain_submit: Literal["fail", "resubmit"] = "fail",
        # The create-call fields, from here to **kwargs: SUBMIT_FIELDS is read from this list.
        text: str | XComArg | None = None,
        voice_id: int | str | None = None,
        language: int | str | None = None,
        gender: int | None = None,
        age: int | None = None,
        project_name: str | None = None,
        project_description: str | None = None,
        folder_id: int | None = None,
        prompt: str | XComArg | None = None,
        duration: float | None = None,
        audio_type: str | None = None,
        engine: str | None = None,
        voice: str | None = None,
        speed: float | None = None,
        pitch: float | None = None,
        webhook_url: str | None = None,
        caller_id: str | None = None,
        subtitles: list[dict[str, Any]] | XComArg | None = None,
        srt: str | XComArg | None = None,
        srt_url: str | None = None,
        video_url: str | None = None,
        audio_name: str | None = None,
        mode: str | None = None,
        add_silence: float | None = None,
        output_format: str | None = None,
        **kwargs: Any,
    ) -> None:
        arguments = locals()  # the create-call fields' values, by the names SUBMIT_FIELDS lists
        policy_fields = WaitPolicy.pop_fields(kwargs)
        self.timeout = wait_timeout(timeout, kwargs, type(self).__name__)
        self.wait_policy = WaitPolicy.build(wait_policy, poll_interval=poll_interval, **policy_fields)
        super().__init__(**kwargs)
        if not templated(kind) and kind not in KINDS:
            raise TtsConfigError(f"kind {kind!r} is not one of {', '.join(KINDS)}")
        check_uncertain_policy(on_uncertain_submit)
        for name, value in (("text", text), ("prompt", prompt), ("srt", srt)):
            if isinstance(value, str) and not value.strip():
                raise TtsConfigError(f"{name} is empty; expected the words to synthesise")
        self.tts_conn_id = tts_conn_id
        self.kind = kind
        self.wait = wait
        self.deferrable = deferrable
        self.wait_timeout = self.timeout  # the old name, for code that still reads it
        self.request_retry = request_retry_overrides(type(self).__name__, request_retry, retry)
        self.retry = self.request_retry  # the old name, for code that still reads it
        self.durable = durable
        self.on_uncertain_submit: Literal["fail", "resubmit"] = on_uncertain_submit
        for name in SUBMIT_FIELDS:
            setattr(self, name, arguments[name])

    def create_fields(self) -> dict[str, Any]:
        """The vendor create body's fields from the (rendered) arguments; SRT text becomes cues."""
        return create_fields({name: getattr(self, name) for name in SUBMIT_FIELDS})

    @cached_property
    def submitter(self) -> SubmitOnce:
        """The submit procedure this operator shares with the one-task operators."""
        return SubmitOnce(
            self.hook,
            kind=self.kind,
            policy=self.wait_policy,
            durable=self.durable,
            on_uncertain_submit=self.on_uncertain_submit,
            log=self.log,
        )

    def execute(self, context: Context) -> str:
        tts_task_id, ledger = self.submitter.submit(context, self.create_fields())
        return self._wait_for(context, tts_task_id, ledger)

    def _wait_for(self, context: Context, tts_task_id: str, ledger: SubmitLedger | None) -> str:
        from airflow_provider_tts.triggers.tts import TtsTaskTrigger, status_from_event

        if not self.wait:
            self._finished(ledger)
            return tts_task_id
        started_at = time.time()
        waiter = Waiter(
            self.wait_policy,
            tts_task_id=tts_task_id,
            kind=self.kind,
            started_at=started_at,
            deadline=started_at + self.timeout,
            logger=self.log,
        )
        if self.deferrable:
            self.defer(
                trigger=TtsTaskTrigger(
                    tts_conn_id=self.tts_conn_id,
                    tts_task_id=tts_task_id,
                    kind=self.kind,
                    deadline=waiter.deadline,
                    started_at=started_at,
                    request_retry=self.request_retry,
                    wait_policy=self.wait_policy,
                ),
                method_name="execute_complete",
                kwargs={"tts_task_id": tts_task_id},
            )
        status_from_event(wait_sync(self.hook, waiter), tts_task_id)
        self._finished(ledger)
        return tts_task_id

    def _finished(self, ledger: SubmitLedger | None) -> None:
        self.submitter.finished(ledger)

    def execute_complete(self, context: Context, event: dict[str, Any] | None = None, tts_task_id: str = "") -> str:
        """Resume after waiting in the triggerer: a failed task raises like the sensor would."""
        from airflow_provider_tts.triggers.tts import status_from_event

        result = status_from_event(event, tts_task_id).tts_task_id
        self._finished(self.submitter.ledger(context))
        return result


def _arguments_after(function: Any, last_setting: str) -> tuple[str, ...]:
    """The keyword-only parameters of ``function`` after ``last_setting``, in their order."""
    names = [
        name
        for name, param in inspect.signature(function).parameters.items()
        if param.kind is inspect.Parameter.KEYWORD_ONLY
    ]
    return tuple(names[names.index(last_setting) + 1 :])


#: Create-call fields DAG authors may pass, across both vendors; each vendor's documented model then
#: decides which apply to its kinds (an inapplicable one is an error naming it, before any request).
#: Declared once, as the keyword-only arguments of ``TtsSubmitOperator.__init__`` that follow
#: ``on_uncertain_submit``.
SUBMIT_FIELDS: tuple[str, ...] = _arguments_after(TtsSubmitOperator.__init__, "on_uncertain_submit")


def from_submitted(
    owner: str,
    submitted: TtsSubmitOperator | None,
    *,
    tts_task_id: str | XComArg | None,
    tts_conn_id: str | None,
    kind: str | None,
) -> tuple[str | XComArg, str, str]:
    """The task id, connection id and kind a downstream wait or store uses, read from ``submitted``.

    A sensor or storage task downstream of a ``TtsSubmitOperator`` would otherwise repeat the
    submit's connection id and kind, and a mismatch (the wrong kind) only shows as a "not found"
    at run time. With ``submitted=`` they are read from the upstream operator when the DAG is
    parsed, and its ``.output`` (an XComArg, which also sets the dependency) is the task id.
    Without it, ``tts_task_id`` is required and the defaults are ``camb_ai_default`` and ``tts``.
    """
    if submitted is None:
        if tts_task_id is None:
            raise TtsConfigError(
                f"{owner} needs tts_task_id (the vendor's task id) or submitted (the TtsSubmitOperator that creates it)"
            )
        return tts_task_id, tts_conn_id if tts_conn_id is not None else DEFAULT_CONN_IDS["camb_ai"], kind or "tts"
    if not isinstance(submitted, TtsSubmitOperator):
        hint = (
            " (a mapped submit: map this task too, with .expand(tts_task_id=submit.output))"
            if type(submitted).__name__ == "MappedOperator"
            else ""
        )
        raise TtsConfigError(
            f"{owner}: submitted must be the TtsSubmitOperator whose task to wait for, got "
            f"{type(submitted).__name__}{hint}"
        )
    if tts_task_id is not None:
        raise TtsConfigError(f"{owner}: give tts_task_id or submitted, not both (submitted's output is the task id)")
    for name, given in (("tts_conn_id", tts_conn_id), ("kind", kind)):
        upstream = getattr(submitted, name)
        if given is not None and given != upstream:
            raise TtsConfigError(
                f"{owner}: {name}={given!r} contradicts {name}={upstream!r} of the submit task {submitted.task_id!r}"
            )
    return submitted.output, submitted.tts_conn_id, submitted.kind
