"""Exceptions raised by the provider.

Every error names what arrived and what was expected, carries the HTTP status and the vendor's
status where there was one, and never contains the API key. The class tells the caller what to do
about it: retry the request (``retryable`` transport errors are retried inside the hook already),
fix the configuration, or give up on the remote task.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from airflow_provider_tts.compat import AirflowException, AirflowFailException

if TYPE_CHECKING:
    from airflow_provider_tts.status import TtsTaskStatus

#: How much of a response body an error message may quote.
BODY_EXCERPT_CHARS = 300


def excerpt(body: bytes | str, limit: int = BODY_EXCERPT_CHARS) -> str:
    """A printable, truncated rendering of a response body for error messages."""
    text = body.decode("utf-8", "replace") if isinstance(body, bytes) else body
    text = " ".join(text.split())
    if len(text) > limit:
        return f"{text[:limit]}... ({len(text)} chars)"
    return text


class TtsError(AirflowException):
    """Base class of every error this provider raises.

    :param message: what happened, in words a DAG author can act on.
    :param http_status: HTTP status of the response involved, if any.
    :param vendor_status: the vendor's own status string, if any.
    """

    def __init__(self, message: str, *, http_status: int | None = None, vendor_status: str | None = None):
        super().__init__(message)
        self.message = message
        self.http_status = http_status
        self.vendor_status = vendor_status


class TtsPermanentError(TtsError, AirflowFailException):
    """An error that retrying the Airflow task cannot fix; it fails the task without using up retries."""


class TtsConfigError(TtsPermanentError, ValueError):
    """A connection, argument or template value is unusable; raised before any request is sent."""


class TtsInvalidRequestError(TtsConfigError):
    """Fields for a vendor request fail validation; nothing was sent, nothing was paid for."""


class TtsApiError(TtsError):
    """The vendor API answered with an HTTP error."""


class TtsAuthError(TtsApiError, TtsPermanentError):
    """401/403: the API key is missing, wrong, or lacks permission. Retrying cannot help."""


class TtsRejectedRequestError(TtsApiError, TtsPermanentError):
    """400/404/422: the vendor rejected the request itself (bad field, unknown id)."""


class TtsAudioUrlExpiredError(TtsApiError):
    """A storage host refused an audio URL (401/403/404/410): it expired or was revoked.

    The API key is never sent to a storage host, so this says nothing about the key. The hook has
    already polled the status once for a fresh URL; the error stays retryable because a later try
    polls again and gets a new URL.
    """


class TtsBlockedHostError(TtsPermanentError):
    """An audio URL or a redirect points at a host or scheme the connection does not allow.

    Link-local addresses (cloud metadata services) are never allowed; private and loopback ones
    and plain http only as the connection says (see ``connection.parse_connection``).
    """


class TtsTransientApiError(TtsApiError):
    """An HTTP error that may pass (429, 5xx), raised once the hook's retries are spent.

    :param retry_after: the vendor's ``Retry-After`` in seconds, when it sent one.
    """

    def __init__(
        self,
        message: str,
        *,
        http_status: int | None = None,
        vendor_status: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message, http_status=http_status, vendor_status=vendor_status)
        self.retry_after = retry_after


class TtsRateLimitError(TtsTransientApiError):
    """429 after every retry was spent."""


class TtsServerError(TtsTransientApiError):
    """5xx after every retry was spent."""


class TtsConnectionError(TtsError):
    """The request failed below HTTP: refused, reset, dropped mid-response, or timed out.

    :param request_sent: False only when the failure provably happened before the request
        reached the server (connection refused, connect timeout). A create call is retried only
        then, because otherwise the vendor may already have created, and charged for, a task.
    """

    def __init__(
        self,
        message: str,
        *,
        http_status: int | None = None,
        vendor_status: str | None = None,
        request_sent: bool = True,
    ) -> None:
        super().__init__(message, http_status=http_status, vendor_status=vendor_status)
        self.request_sent = request_sent


class TtsProtocolError(TtsError):
    """A response does not fit the vendor's documented contract (wrong shape, not JSON, HTML page)."""


class TtsSubmitUncertainError(TtsPermanentError):
    """A create call failed in a way that leaves unknown whether the vendor created the task.

    Neither the hook nor Airflow may send it again, because that could create, and pay for, a
    second task: being an ``AirflowFailException``, it fails the task without using up its retries.
    The message says what the user can check and how to resubmit on purpose.
    """


class TtsBudgetExceededError(TtsPermanentError):
    """What a storing operator is about to send, or a batch has been charged, exceeds ``max_characters``
    or ``max_credits`` (the operator's, or the connection's default).

    Raised before the first create or stream request when the estimate is over the limit (nothing
    sent, nothing written), or once a vendor reports more credits than the estimate said (a
    batch stops submitting and reports the rest as not submitted). Being an
    ``AirflowFailException``, it fails the task without using up its retries: a retry would be
    refused again. The message says the estimate, the limit and what to change.

    :param limit_name: ``"max_characters"`` or ``"max_credits"``.
    :param estimate: the characters or credits that would be (or were) spent.
    :param limit: the limit they exceed.
    """

    def __init__(
        self,
        message: str,
        *,
        limit_name: str | None = None,
        estimate: float | None = None,
        limit: float | None = None,
        http_status: int | None = None,
        vendor_status: str | None = None,
    ) -> None:
        super().__init__(message, http_status=http_status, vendor_status=vendor_status)
        self.limit_name = limit_name
        self.estimate = estimate
        self.limit = limit


class TtsTaskFailedError(TtsError):
    """The remote task ended in a failed state.

    :param status: the failed status, with the vendor's status string and message.
    """

    def __init__(self, message: str, *, status: TtsTaskStatus) -> None:
        super().__init__(message, vendor_status=status.vendor_status)
        self.status = status
        self.retryable = bool(status.retryable)

    @classmethod
    def for_status(cls, status: TtsTaskStatus) -> TtsTaskFailedError:
        """The right exception for a failed status: permanent failures must not use up retries."""
        detail = f": {status.message}" if status.message else ""
        message = (
            f"{status.api} {status.kind} task {status.tts_task_id!r} ended with vendor status "
            f"{status.vendor_status!r}{detail}"
        )
        if status.retryable:
            return cls(message + " (a new attempt may succeed)", status=status)
        return TtsPermanentTaskFailedError(message + " (retrying cannot fix this)", status=status)


class TtsPermanentTaskFailedError(TtsTaskFailedError, TtsPermanentError):
    """A failure that retrying cannot fix (no credits, rejected content, vendor time limit, gone task).

    Being an ``AirflowFailException``, it fails the Airflow task without using up its retries.
    """


class TtsWaitTimeoutError(TtsError):
    """The task was still pending when the wait's deadline passed."""


class TtsBatchItemsFailedError(TtsError):
    """More items of a batch failed than ``max_failed_items`` allows; the manifest names each.

    Raised after every other item was stored and the manifest written. A retry resubmits only the
    items that failed retryably and re-attaches to, or skips, the rest.
    """


class TtsBatchItemsFailedPermanentlyError(TtsBatchItemsFailedError, TtsPermanentError):
    """As :class:`TtsBatchItemsFailedError`, but no failed item can succeed on a retry."""


def error_event(exc: BaseException) -> dict[str, Any]:
    """A trigger event for an error, as plain values; :func:`error_from_event` rebuilds the exception.

    Unexpected exceptions (bugs) become events too, so a wait ends with a clear error instead of
    crashing the triggerer.
    """
    known = isinstance(exc, TtsError)
    return {
        "status": "error",
        "error_type": type(exc).__name__ if known else "TtsError",
        "message": str(exc) if known else f"unexpected {type(exc).__name__} while waiting: {exc}",
        "http_status": getattr(exc, "http_status", None),
        "vendor_status": getattr(exc, "vendor_status", None),
        "retryable": not isinstance(exc, TtsPermanentError),
    }


def error_from_event(event: dict[str, Any]) -> TtsError:
    """The exception an ``error`` event stands for, of the same class the sync path would raise."""
    classes = {cls.__name__: cls for cls in _event_error_classes()}
    cls = classes.get(str(event.get("error_type")), TtsError)
    if cls is TtsError and event.get("retryable") is False:
        cls = TtsPermanentError
    return cls(
        str(event.get("message") or "the wait ended with an error"),
        http_status=event.get("http_status"),
        vendor_status=event.get("vendor_status"),
    )


def _event_error_classes() -> list[type[TtsError]]:
    return [
        TtsError,
        TtsPermanentError,
        TtsConfigError,
        TtsInvalidRequestError,
        TtsApiError,
        TtsTransientApiError,
        TtsAuthError,
        TtsRejectedRequestError,
        TtsRateLimitError,
        TtsServerError,
        TtsConnectionError,
        TtsProtocolError,
        TtsSubmitUncertainError,
        TtsAudioUrlExpiredError,
        TtsBlockedHostError,
    ]
