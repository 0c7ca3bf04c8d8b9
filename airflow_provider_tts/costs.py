"""Costs: what a storing operator is about to send, what that may cost, and the limits it may not pass.

**Characters** are what is sent to be spoken, counted as Python ``len()`` of the validated create
body's spoken field (:meth:`~airflow_provider_tts.vendors.base.Vendor.spoken_characters`): ``text``
(text-to-speech, ``/tts-stream``), ``prompt`` (Camb.ai text-to-sound), the cues' ``text`` summed
(RevidAPI SRT-to-speech). A RevidAPI ``srt_url`` sends no text, so its characters are unknown.

**Rates** (:func:`rate_for`) come from one table, each vendor class's ``credits_per_1000_characters``
(RevidAPI: 10 credits per 1,000 characters, its published price; Camb.ai: none published), unless
the connection's ``credits_per_1000_characters`` extra sets the account's price.

**Budgets** (:class:`Budget`): ``max_characters`` and ``max_credits`` on a storing operator, or
the connection extras of the same names as defaults an operator's own values replace. An
estimate over one is refused before the first create or stream request with
:class:`~airflow_provider_tts.exceptions.TtsBudgetExceededError` (which fails the task without
using up its retries); a credit limit that cannot be checked (no price known, no text to count)
is a :class:`~airflow_provider_tts.exceptions.TtsConfigError`, never a silent pass. A batch
whose vendor reports more credits than estimated stops submitting (:class:`RunningBudget`).

What was spent is reported as ``characters``, ``requests`` and ``credits`` (``docs/results.md``).
"""

from __future__ import annotations

import math
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from airflow_provider_tts.exceptions import TtsBudgetExceededError, TtsConfigError

if TYPE_CHECKING:
    from airflow_provider_tts.connection import ConnectionSettings
    from airflow_provider_tts.vendors.base import Vendor

#: What to change, said once for every refusal.
_HOW_TO_RAISE = "raise {name} on the operator, or the connection extra {name} that sets its default"


def check_limit(name: str, value: Any) -> Any:
    """An operator's ``max_characters`` (an integer >= 0) or ``max_credits`` (a number >= 0), or None."""
    if value is None:
        return None
    integer = name == "max_characters"
    ok = isinstance(value, int) if integer else isinstance(value, int | float) and math.isfinite(value)
    if not ok or isinstance(value, bool) or value < 0:
        kind = "an integer" if integer else "a number"
        raise TtsConfigError(f"{name} must be None or {kind} >= 0, got {value!r}")
    return value


def number(value: float) -> str:
    """``1,234`` for a whole number, ``12.35`` otherwise: how estimates read in logs and errors."""
    return f"{value:,.0f}" if float(value).is_integer() else f"{value:,.2f}"


def credits_for(characters: int | None, rate: float | None) -> float | None:
    """Credits for ``characters`` at ``rate`` per 1,000; None when either is unknown."""
    if characters is None or rate is None:
        return None
    return round(characters * rate / 1000, 6)


@dataclass(frozen=True)
class Rate:
    """A price in credits per 1,000 characters (None: none known) and where it came from."""

    credits_per_1000: float | None
    source: str


def rate_for(vendor: Vendor, kind: str) -> Rate:
    """The connection's ``credits_per_1000_characters``, else the vendor table's price for ``kind``."""
    own = vendor.settings.credits_per_1000_characters
    if own is not None:
        return Rate(own, f"connection {vendor.settings.conn_id!r}")
    table = vendor.credits_per_1000_characters.get(kind)
    if table is not None:
        return Rate(table, f"the {vendor.api} price table")
    return Rate(None, f"{vendor.api} publishes no {kind} price")


@dataclass(frozen=True)
class Estimate:
    """What is about to be sent: characters (None: unknown), paid requests, and the rate."""

    characters: int | None
    requests: int
    rate: Rate

    @property
    def credits(self) -> float | None:
        return credits_for(self.characters, self.rate.credits_per_1000)

    def describe(self) -> str:
        """``about to send 2,000 characters in 1 request, ~20 credits (rate 10 per 1,000; from ...)``."""
        chars = (
            "characters unknown (no text is sent)"
            if self.characters is None
            else f"{number(self.characters)} characters"
        )
        sent = f"about to send {chars} in {number(self.requests)} request{'s' if self.requests != 1 else ''}"
        if self.rate.credits_per_1000 is None:
            return f"{sent}, credits unknown ({self.rate.source}; set the connection extra credits_per_1000_characters)"
        cost = "~? credits" if self.credits is None else f"~{number(self.credits)} credits"
        return f"{sent}, {cost} (rate {number(self.rate.credits_per_1000)} per 1,000; from {self.rate.source})"


@dataclass(frozen=True)
class Budget:
    """The limits that apply to one task: the operator's own, else the connection's defaults.

    :param origins: where each limit came from (``the operator`` or ``connection '<id>'``), for messages.
    """

    max_characters: int | None = None
    max_credits: float | None = None
    origins: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def resolve(cls, max_characters: int | None, max_credits: float | None, settings: ConnectionSettings) -> Budget:
        """The operator's limits, each falling back to the connection's extra of the same name."""
        values: dict[str, Any] = {}
        origins: dict[str, str] = {}
        for name, own in (("max_characters", max_characters), ("max_credits", max_credits)):
            default = getattr(settings, name)
            if own is not None:
                values[name], origins[name] = own, "set on the operator"
            elif default is not None:
                values[name], origins[name] = default, f"the default of connection {settings.conn_id!r}"
        return cls(values.get("max_characters"), values.get("max_credits"), origins)

    @property
    def limited(self) -> bool:
        return self.max_characters is not None or self.max_credits is not None

    def check(self, estimate: Estimate, what: str) -> None:
        """Refuse an estimate over a limit, or a limit that cannot be checked; before anything is sent."""
        if not self.limited or estimate.requests == 0:
            return
        if estimate.characters is None:
            names = " and ".join(n for n in ("max_characters", "max_credits") if getattr(self, n) is not None)
            raise TtsConfigError(
                f"{what}: {names} cannot be checked: the text is not sent (the vendor reads it from srt_url), so "
                "its characters are unknown. Give the cues (srt or subtitles) instead, or drop the limit. Nothing "
                "was sent."
            )
        if self.max_characters is not None and estimate.characters > self.max_characters:
            raise self._exceeded(what, estimate, "max_characters", estimate.characters, self.max_characters,
                                 "Send fewer or shorter texts (split a long one)")  # fmt: skip
        if self.max_credits is None:
            return
        if estimate.credits is None:
            raise TtsConfigError(
                f"{what}: max_credits={number(self.max_credits)} ({self.origins['max_credits']}) cannot be checked: "
                f"{estimate.rate.source}, and the connection sets no credits_per_1000_characters extra. Set that "
                "extra to the account's price, or limit max_characters instead. Nothing was sent."
            )
        if estimate.credits > self.max_credits:
            raise self._exceeded(what, estimate, "max_credits", estimate.credits, self.max_credits,
                                 "Send fewer characters; if the price changed, correct the connection extra "
                                 "credits_per_1000_characters")  # fmt: skip

    def _exceeded(
        self, what: str, estimate: Estimate, name: str, value: float, limit: float, fix: str
    ) -> TtsBudgetExceededError:
        return TtsBudgetExceededError(
            f"{what}: {estimate.describe()}; that exceeds {name}={number(limit)} ({self.origins[name]}), so nothing "
            f"was sent and nothing written. {fix}, or {_HOW_TO_RAISE.format(name=name)}.",
            limit_name=name,
            estimate=value,
            limit=limit,
        )

    def check_reported(self, credits: int | None, what: str, where: str) -> None:
        """After a paid call: refuse to go on when the vendor says it charged more than ``max_credits``."""
        if self.max_credits is None or credits is None or credits <= self.max_credits:
            return
        raise TtsBudgetExceededError(
            f"{what}: the vendor reported {number(credits)} credits for this request, above max_credits="
            f"{number(self.max_credits)} ({self.origins['max_credits']}). The audio is paid for and kept ({where}), "
            f"so a re-run takes it from the request cache without paying again; "
            f"{_HOW_TO_RAISE.format(name='max_credits')}, or correct credits_per_1000_characters.",
            limit_name="max_credits",
            estimate=credits,
            limit=self.max_credits,
        )


def parse_time_check(characters: int | None, operator: Any) -> None:
    """When the DAG is parsed: a literal text longer than the operator's ``max_characters`` fails there.

    Only the characters: a credit limit needs the connection's price, known at run time.
    """
    max_characters = operator.max_characters
    if characters is not None and max_characters is not None and characters > max_characters:
        raise TtsBudgetExceededError(
            f"{type(operator).__name__} {operator.task_id!r}: the text has {number(characters)} characters, more "
            f"than max_characters={number(max_characters)} set on the operator; nothing can be sent. Shorten or "
            "split the text, or raise max_characters.",
            limit_name="max_characters",
            estimate=characters,
            limit=max_characters,
        )


class RunningBudget:
    """A batch's credit budget while it pays: each estimate replaced by what the vendor reports.

    The projection starts at the sum of the estimates of every request to pay; a request whose
    create answer reports credits moves it by the difference. Once it passes ``max_credits``,
    :attr:`crossed` stays True and the batch sends nothing more (thread-safe).
    """

    def __init__(self, budget: Budget, estimates: Mapping[str, float]) -> None:
        assert budget.max_credits is not None
        self.limit: float = budget.max_credits
        self.origin = budget.origins.get("max_credits", "")
        self._estimates = dict(estimates)
        self._projected = sum(estimates.values())
        self._reported = 0
        self._lock = threading.Lock()
        self.crossed = False

    def report(self, key: str, credits: int | None) -> None:
        """A request was paid; ``credits`` is what the vendor said it charged (None: it did not say)."""
        if credits is None:
            return
        with self._lock:
            self._projected += credits - self._estimates.pop(key, 0.0)
            self._reported += credits
            if self._projected > self.limit:
                self.crossed = True

    def message(self) -> str:
        """Why the rest of the batch was not submitted (a manifest row's ``error``)."""
        with self._lock:
            projected, reported = self._projected, self._reported
        return (
            f"not submitted: the vendor reported {number(reported)} credits, more than estimated, and with the "
            f"estimates of the rest the batch would reach ~{number(projected)} credits, over max_credits="
            f"{number(self.limit)} ({self.origin})"
        )


def request_spending(vendor: Vendor, kind: str, body: Mapping[str, Any]) -> dict[str, Any]:
    """A paid request's part of the stored-file result: its ``characters``, 1 request, ``estimated_credits``."""
    characters = vendor.spoken_characters(kind, body)
    rate = rate_for(vendor, kind).credits_per_1000
    return {"characters": characters, "requests": 1, "estimated_credits": credits_for(characters, rate)}


def estimate_and_check(
    vendor: Vendor,
    kind: str,
    characters: int | None,
    *,
    max_characters: int | None,
    max_credits: float | None,
    what: str,
    log: Any,
    requests: int = 1,
) -> tuple[Estimate, Budget]:
    """Log what is about to be sent and what it may cost, then refuse it if it passes a limit.

    Called by every storing operator after the request cache was asked (audio it holds costs
    nothing) and before the first create or stream request.
    """
    estimate = Estimate(characters, requests, rate_for(vendor, kind))
    log.info("%s: %s", what, estimate.describe())
    budget = Budget.resolve(max_characters, max_credits, vendor.settings)
    budget.check(estimate, what)
    return estimate, budget
