"""What a vendor unit is: pure request builders and response parsers, no I/O.

Each vendor (Camb.ai, RevidAPI) is one small class that knows its URLs, payloads and response
shapes. The hook does the I/O, sync or async, through the same vendor object, so both paths parse
exactly alike and nothing outside ``vendors/`` branches on the vendor.
"""

from __future__ import annotations

import email.utils
import importlib
import json
import logging
import re
import reprlib
import time
from abc import ABC, abstractmethod
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any, ClassVar, Literal
from urllib.parse import quote, urlsplit

from pydantic import BaseModel, StringConstraints, ValidationError

from airflow_provider_tts.exceptions import (
    TtsApiError,
    TtsAuthError,
    TtsConfigError,
    TtsInvalidRequestError,
    TtsProtocolError,
    TtsRateLimitError,
    TtsRejectedRequestError,
    TtsServerError,
    excerpt,
)

if TYPE_CHECKING:
    # The status model (pydantic, with its serializers) loads in :meth:`Vendor.status`, when a status
    # is made, and the connection's settings come from the hook: building an operator checks its
    # fields with a vendor's request models and needs neither.
    from airflow_provider_tts.connection import ConnectionSettings
    from airflow_provider_tts.status import Api, Kind, State, TtsTaskStatus

log = logging.getLogger(__name__)

#: A vendor task id must look like an id, so it can never change the URL path or a file name.
#: A text field that must say something: stripped, at least one character (both vendors' bodies).
NonEmptyText = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1)]
_TASK_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}")


@dataclass(frozen=True)
class ApiRequest:
    """One HTTP request a vendor wants sent.

    :param authenticated: whether the vendor's API expects the key; the transport still sends it
        only to the vendor's own API origins, never to a storage host or across a redirect.
    :param idempotent: safe to resend after an ambiguous failure. Create calls are not: a
        resend after the vendor accepted the first would create, and charge for, a second task.
    :param what: words for error messages ("status of camb_ai tts task 'abc'").
    """

    method: Literal["GET", "POST"]
    url: str
    what: str
    params: Mapping[str, str] | None = None
    json: Any = None
    authenticated: bool = True
    idempotent: bool = True


@dataclass(frozen=True)
class ApiResponse:
    """A complete (small, JSON) response as the parsers see it; header names are lower case."""

    status: int
    headers: Mapping[str, str]
    body: bytes
    url: str

    @property
    def content_type(self) -> str:
        return self.headers.get("content-type", "").split(";")[0].strip().lower()


@dataclass(frozen=True)
class Submission:
    """What a create call returned: the task id, the status when the vendor finished at once, and
    the credits the vendor said it charged (``X-Credits-Required``; None when it did not say)."""

    tts_task_id: str
    status: TtsTaskStatus | None = None
    credits: int | None = None


class _WarnOnce:
    """Remembers which undocumented statuses were already warned about, so logs are not flooded.

    A plain class, not a dataclass: its one instance needs no generated methods, and a dataclass's
    are compiled when the module loads, which every DAG parse that builds an operator pays.
    """

    def __init__(self) -> None:
        self.seen: set[tuple[str, str]] = set()

    def __call__(self, api: str, vendor_status: str) -> None:
        key = (api, vendor_status[:64])
        if key not in self.seen and len(self.seen) < 1000:
            self.seen.add(key)
            log.warning(
                "%s returned the undocumented status %r; treating it as pending and letting the deadline decide",
                api,
                key[1],
            )


warn_unknown_status = _WarnOnce()


def validate_task_id(tts_task_id: Any) -> str:
    """Check a vendor task id before it goes into a URL path or a file name."""
    if not isinstance(tts_task_id, str) or not _TASK_ID_RE.fullmatch(tts_task_id):
        raise TtsConfigError(
            f"tts_task_id must be 1-128 characters of letters, digits, '.', '_', ':' or '-' starting "
            f"with a letter or digit, got {tts_task_id!r:.80}"
        )
    return tts_task_id


def parse_retry_after(value: str | None) -> float | None:
    """``Retry-After`` as seconds from now: a number of seconds or an HTTP-date; None if absent or bad."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None:
        return None
    return max(0.0, when.timestamp() - time.time())


def credits_header(value: str | None) -> int | None:
    """What a vendor says a call charged (Camb.ai's ``X-Credits-Required``): a whole number >= 0, else None."""
    if value is None:
        return None
    try:
        number = float(value.strip())
    except ValueError:
        return None
    return int(number) if number.is_integer() and number >= 0 else None


def _vendor_message(body: bytes) -> str:
    """The vendor's own words from an error body (FastAPI ``detail``, ``error``, ``message``)."""
    try:
        data = json.loads(body)
    except ValueError:
        return excerpt(body)
    if isinstance(data, list) and len(data) == 1:
        data = data[0]
    if isinstance(data, dict):
        detail = data.get("detail")
        if isinstance(detail, list):  # FastAPI 422: [{"loc": [...], "msg": "...", "type": "..."}]
            parts = []
            for item in detail[:10]:
                if isinstance(item, dict):
                    loc = ".".join(str(p) for p in item.get("loc", []) if p != "body")
                    parts.append(f"{loc}: {item.get('msg')}" if loc else str(item.get("msg")))
            if parts:
                return "; ".join(parts)
        for key in ("detail", "error", "message"):
            if isinstance(data.get(key), str) and data[key]:
                return excerpt(data[key])
    return excerpt(body)


def http_error(resp: ApiResponse, what: str) -> TtsApiError:
    """The exception for a non-2xx response that is not a task state the parser understood."""
    status = resp.status
    if resp.content_type == "text/html":
        detail = f"an HTML page instead of JSON: {excerpt(resp.body, 120)}"
    else:
        detail = _vendor_message(resp.body)
    message = f"{what}: HTTP {status} from {urlsplit(resp.url).netloc}: {detail}"
    retry_after = parse_retry_after(resp.headers.get("retry-after"))
    if status in (401, 403):
        return TtsAuthError(message + " (check the connection's API key)", http_status=status)
    if status == 429:
        return TtsRateLimitError(message, http_status=status, retry_after=retry_after)
    if status in (408, 500, 502, 503, 504) or status >= 500:
        return TtsServerError(message, http_status=status, retry_after=retry_after)
    if status in (400, 404, 409, 410, 413, 422):
        return TtsRejectedRequestError(message, http_status=status)
    return TtsApiError(message, http_status=status)


def json_body(resp: ApiResponse, what: str) -> Any:
    """Decode a JSON body, or raise the error that best explains why it is not one.

    A non-2xx status with a body that is not a task state becomes the matching HTTP error (so a
    502 HTML page is a retryable server error); a 2xx that is not JSON is a protocol error.
    """
    try:
        return json.loads(resp.body)
    except ValueError:
        if resp.status >= 300:
            raise http_error(resp, what) from None
        kind = "an HTML page" if resp.content_type == "text/html" else f"{resp.content_type or 'no'} content"
        raise TtsProtocolError(
            f"{what}: expected a JSON body, got {kind} (HTTP {resp.status}): {excerpt(resp.body)}",
            http_status=resp.status,
        ) from None


def success_json(resp: ApiResponse, what: str) -> Any:
    """The JSON body of a 2xx response; any other status raises its HTTP error."""
    if not 200 <= resp.status < 300:
        raise http_error(resp, what)
    return json_body(resp, what)


def unwrap_single(data: Any, what: str) -> Any:
    """Accept a one-element JSON array where an object was documented (seen in Revid clients)."""
    if isinstance(data, list):
        if len(data) != 1:
            raise TtsProtocolError(f"{what}: expected an object or a one-element array, got {len(data)} items")
        return data[0]
    return data


#: Shortens a rejected value for an error message the way ``repr`` would print it, but keeps it
#: well-formed: a long string loses its middle (``'abc...xyz'``), never its closing quote.
_SHORT_REPR = reprlib.Repr()  # keyword arguments arrived in Python 3.12
_SHORT_REPR.maxstring = _SHORT_REPR.maxother = 60
_SHORT_REPR.maxlist = _SHORT_REPR.maxdict = 4
_SHORT_REPR.maxlevel = 2


def validate_fields(
    model: type[BaseModel], fields: Mapping[str, Any], what: str, *, pending: Collection[str] = ()
) -> dict[str, Any]:
    """Validate create-call fields against a vendor's documented request model, before anything is sent.

    The error names every missing required field first (with the field's documented meaning, when
    the model has one), then each invalid value, shortened but never cut mid-quote.

    ``pending`` names fields whose values are not known yet (a Jinja template or an XComArg when a
    DAG is parsed): they are left out, and so are the errors only their absence can explain (that
    field missing, or a rule across fields), so the literal fields are still checked at parse time.
    """
    given = {name: value for name, value in fields.items() if name not in pending}
    try:
        return model.model_validate(given).model_dump(exclude_none=True)
    except ValidationError as exc:
        missing: list[str] = []
        problems: list[str] = []
        for err in exc.errors():
            if pending and (not err["loc"] or err["loc"][0] in pending):
                continue  # decided once the pending values are known
            where = ".".join(str(p) for p in err["loc"]) or "(fields)"
            if err["type"] == "missing":
                info = model.model_fields.get(str(err["loc"][0])) if len(err["loc"]) == 1 else None
                missing.append(f"{where} ({info.description})" if info and info.description else where)
            else:
                problems.append(f"{where}: {err['msg']} (got {_SHORT_REPR.repr(err.get('input'))})")
        if missing:
            problems.insert(0, f"missing required field{'s' if len(missing) > 1 else ''}: {', '.join(missing)}")
        if not problems:
            return {}  # every error waits for a pending value
        raise TtsInvalidRequestError(f"{what}: {'; '.join(problems)}") from None


def path_segment(value: str | int) -> str:
    """Quote a value for a URL path segment; ids are validated already, this is a second fence."""
    return quote(str(value), safe="")


class Vendor(ABC):
    """One vendor API. Subclasses hold the vendor's facts; instances hold one connection's settings."""

    api: ClassVar[Api]
    kinds: ClassVar[tuple[Kind, ...]]
    default_api_base_url: ClassVar[str]
    #: A second host for status polls (RevidAPI); None when statuses come from the API base.
    default_status_base_url: ClassVar[str | None] = None
    #: The create-body field in which the vendor stores a caller's reference with the task
    #: (RevidAPI's ``id``), so a duplicate created by an uncertain submit can be found; None when
    #: the API has no such field (Camb.ai).
    client_reference_field: ClassVar[str | None] = None
    #: The module whose ``FIELDS`` maps each kind to its documented create body, a pydantic model
    #: that forbids unknown keys: imported on first use (:meth:`create_model`), never by a DAG parse.
    create_fields_module: ClassVar[str]
    #: The create endpoint of each kind, below the API base URL.
    create_paths: ClassVar[Mapping[str, str]]
    #: The body field that holds what is spoken, per kind (``text``, ``prompt``, SRT ``subtitles``):
    #: what :meth:`spoken_characters` counts for estimates and budgets.
    spoken_fields: ClassVar[Mapping[str, str]]
    #: The vendor's published price per kind, in credits per 1,000 spoken characters; None where
    #: the vendor publishes none. A connection's ``credits_per_1000_characters`` extra overrides it
    #: (prices change): see :mod:`airflow_provider_tts.costs`.
    credits_per_1000_characters: ClassVar[Mapping[str, float | None]]
    #: The characters one request may speak, per kind, as ``(minimum, maximum)``: the one place the
    #: long-text operators (:mod:`airflow_provider_tts.longtext`) take the size of a part from. A
    #: kind absent here is not split (a sound prompt, an SRT file).
    text_limits: ClassVar[Mapping[str, tuple[int, int]]] = {}

    def __init__(self, settings: ConnectionSettings) -> None:
        self.settings = settings

    def status(self, kind: Kind, tts_task_id: str, state: State, vendor_status: str, **more: Any) -> TtsTaskStatus:
        """Build a normalised status for this vendor (the one constructor the parsers use)."""
        from airflow_provider_tts.status import TtsTaskStatus

        return TtsTaskStatus(
            api=self.api, kind=kind, tts_task_id=tts_task_id, state=state, vendor_status=vendor_status, **more
        ).mark_fresh()

    def check_kind(self, kind: Any) -> Kind:
        """Refuse a kind this vendor does not have, before any request."""
        if kind not in self.kinds:
            raise TtsConfigError(
                f"kind {kind!r} is not supported by {self.api} (connection {self.settings.conn_id!r}); "
                f"expected one of {', '.join(self.kinds)}"
            )
        return kind  # type: ignore[no-any-return]

    @abstractmethod
    def status_request(self, kind: Kind, tts_task_id: str) -> ApiRequest:
        """The poll for one task's status."""

    @abstractmethod
    def parse_status(self, kind: Kind, tts_task_id: str, resp: ApiResponse) -> TtsTaskStatus:
        """Normalise a status response; raise a TtsError for anything that is not a task state."""

    def not_found_hint(self, kind: Kind, tts_task_id: str) -> str:
        """What a "task not found" message adds: the kind and endpoint asked, and what to check.

        A task waited for with the wrong ``kind`` looks exactly like a task that does not exist,
        so the message names what was asked rather than leaving the user to guess.
        """
        return (
            f"asked for a {kind} task at GET {self.status_request(kind, tts_task_id).url}; check that "
            f"kind={kind!r} is the kind the task was submitted as"
        )

    @classmethod
    def validate_create(cls, kind: Kind, fields: Mapping[str, Any], *, pending: Collection[str] = ()) -> dict[str, Any]:
        """The create body of ``kind``, validated against the documented model; needs no connection.

        A class method so an operator typed for one vendor and kind can check its literal fields
        when the DAG is parsed (``pending``: see :func:`validate_fields`), long before any connection
        is looked up, with exactly the rule the create call applies later.
        """
        return validate_fields(cls.create_model(kind), fields, f"{cls.api} {kind} submit", pending=pending)

    @classmethod
    def create_model(cls, kind: Kind) -> type[BaseModel]:
        """The documented create body of ``kind`` (imports the vendor's models on first use)."""
        models: Mapping[Kind, type[BaseModel]] = importlib.import_module(cls.create_fields_module).FIELDS
        return models[kind]

    @classmethod
    def spoken_characters(cls, kind: str, body: Mapping[str, Any]) -> int | None:
        """The characters a validated create body asks the vendor to speak, as Python ``len()`` counts them.

        The kind's spoken field (:attr:`spoken_fields`) after the vendor's model validated it (so
        surrounding whitespace the model strips is not counted); for SRT cues the sum of the cues'
        ``text``. None when the body carries no text to count (RevidAPI's ``srt_url``).
        """
        value = body.get(cls.spoken_fields[kind])
        if isinstance(value, str):
            return len(value)
        if isinstance(value, list):
            return sum(
                len(cue["text"]) for cue in value if isinstance(cue, Mapping) and isinstance(cue.get("text"), str)
            )
        return None

    def reported_credits(self, resp: ApiResponse) -> int | None:
        """What a create answer says was charged: its ``X-Credits-Required`` header, when there is one."""
        return credits_header(resp.headers.get("x-credits-required"))

    def submit_request(self, kind: Kind, fields: Mapping[str, Any]) -> ApiRequest:
        """The create call, with fields validated against the vendor's documented model.

        Never resent after an ambiguous failure: the vendor may have created, and charged for, the task.
        """
        what = f"{self.api} {kind} submit"
        body = self.validate_create(kind, fields)
        return ApiRequest(
            "POST", f"{self.settings.api_base_url}/{self.create_paths[kind]}", what=what, json=body, idempotent=False
        )

    @abstractmethod
    def parse_submit(self, kind: Kind, resp: ApiResponse) -> Submission:
        """The created task's id (and status, if the vendor finished at once)."""

    @abstractmethod
    def audio_request(self, status: TtsTaskStatus) -> ApiRequest:
        """Where the audio of a succeeded task is fetched from."""

    @abstractmethod
    def probe_request(self) -> ApiRequest:
        """A cheap call whose answer tells whether the key is accepted (for ``test_connection``)."""

    def probe_verdict(self, resp: ApiResponse) -> tuple[bool, str]:
        """Judge the probe: 401/403 mean a bad key; any other answer means the API accepted it."""
        if resp.status in (401, 403):
            return False, str(http_error(resp, f"{self.api} API key check"))
        if resp.status >= 500 or resp.status == 429:
            return False, str(http_error(resp, f"{self.api} API check"))
        return True, f"{self.api} API at {self.settings.api_base_url} accepted the API key"

    def file_url_from(self, resp: ApiResponse, what: str) -> str:
        """A result endpoint answered JSON instead of audio: the pre-signed URL it points to."""
        data = unwrap_single(json_body(resp, what), what)
        if isinstance(data, dict):
            for key in ("output_url", "file_url", "url", "audio_url"):
                url = data.get(key)
                if isinstance(url, str) and urlsplit(url).scheme in ("http", "https"):
                    return url
        raise TtsProtocolError(
            f"{what}: expected audio bytes or JSON with an http(s) 'output_url'/'file_url'/'url', "
            f"got {excerpt(resp.body)}"
        )
