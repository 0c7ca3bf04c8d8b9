"""The submit phase of a batch: each distinct request decided from the request cache, paid for once.

A request whose audio is already stored costs nothing; one already submitted is waited for; one
the vendor refused for good, or whose create answer was lost, is reported failed rather than paid
for again (unless the operator says otherwise). The rest are claimed in the request cache, created
``max_active_requests`` at a time, and their task ids recorded right after (or, failing that, kept
aside by :class:`~airflow_provider_tts.batch.stash.IdStash`), so a retry re-attaches and never
pays twice. A refused key stops every further create of the batch.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections import deque
from collections.abc import Iterator, Mapping
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from airflow_provider_tts.batch.manifest import changed_message, rejected_message, uncertain_message
from airflow_provider_tts.batch.plan import BatchPlan, PlanPhase, item_key
from airflow_provider_tts.batch.stash import IdStash
from airflow_provider_tts.costs import RunningBudget, credits_for, estimate_and_check
from airflow_provider_tts.exceptions import TtsAuthError, TtsConfigError, TtsPermanentError
from airflow_provider_tts.fingerprint import fingerprint_hex
from airflow_provider_tts.storage import TtsStorageError
from airflow_provider_tts.storing import plain_uri
from airflow_provider_tts.submissions import MarkerGuard, outcome_unknown

if TYPE_CHECKING:
    from airflow.sdk import Context

    from airflow_provider_tts.cache import CachedAudio, RequestCache
    from airflow_provider_tts.submissions import SubmitIdentity

#: How long a request another run claimed (and has not yet recorded a task id for) is waited for
#: before it is reported as in doubt: that run's create call normally answers within seconds.
CLAIM_WAIT_SECONDS = 120.0
CLAIM_POLL_SECONDS = 1.0
#: Times a create refused with nothing created (429/503 after the transport's retries) is sent in one try.
CREATE_ROUNDS = 3
#: Requests whose fields are held at once while paying (the texts are read again, a chunk at a time).
PAY_CHUNK = 256
#: Writes of a paid task id into the request cache before it is kept aside (see ``IdStash``).
RECORD_ATTEMPTS = 3
RECORD_BACKOFF = 0.5


@dataclass(frozen=True)
class _Job:
    """One request to pay for, and which of its ``CREATE_ROUNDS`` sends this is."""

    fingerprint: str
    fields: dict[str, Any]
    rounds: int = 1


@dataclass
class _Outcome:
    """What the submit phase decided for one request; ``error`` set for a failed one."""

    kind: str  # cached, wait, failed; claimed_elsewhere while another run holds a fresh claim
    tts_task_id: str | None = None
    submitted_at: float = 0.0
    error: str | None = None
    retryable: bool = True
    #: The exception that stopped the batch (a refused key), re-raised once every request ended.
    cause: BaseException | None = None
    #: Paid, but the task id could not be written to the request cache.
    unsaved: bool = False
    #: The create was refused with nothing created and the claim let go: it may be sent again.
    released: bool = False
    #: Not sent because the vendor's reported credits put the batch over ``max_credits``.
    budget: bool = False
    #: A cached request's confirmed audio: the store phase uses it as it is, without reading the
    #: request cache again (a GET and a HEAD per item more otherwise).
    hit: CachedAudio | None = None
    #: What the store phase's ``spent`` reads of a waited-for request's cache entry (its owner and the
    #: credits the vendor reported), as this phase wrote or read it: the entry is not read again.
    entry: dict[str, Any] | None = None


class _ClaimLost(Exception):
    """A create about to be sent found its request no longer free to claim: nothing was sent, decide again.

    Not a :class:`~airflow_provider_tts.exceptions.TtsError`, so the transport never retries it and
    :meth:`SubmitPhase._create` cannot mistake it for a create that failed.
    """


class _ClaimGuard(MarkerGuard):
    """A request's claim, held by the batch only while its create is on the wire.

    A 429 or 503 on a create proves nothing was created, and the transport resends the create
    after a backoff of up to ``max_backoff`` seconds. A claim held through that sleep would make
    a worker killed in it look, to the next try, like one killed mid-request: "claimed, no task
    id", so in doubt and not paid for again. So the claim goes before the sleep (one delete) and
    is taken again, if still free, before the resend (one create-if-absent); a kill in between
    leaves nothing, and the next try pays once. Another run that claimed the request meanwhile
    keeps it: this resend is not sent (:class:`_ClaimLost`) and the request is decided again.
    """

    def __init__(self, cache: RequestCache, fingerprint: str, log: Any) -> None:
        super().__init__(log)
        self.cache = cache
        self.fingerprint = fingerprint

    def what(self) -> str:
        return f"the claim of request {fingerprint_hex(self.fingerprint)[:16]}"

    def drop(self) -> None:
        self.cache.release(self.fingerprint)

    def retake(self) -> None:
        try:
            entry = self.cache.claim(self.fingerprint)
        except TtsStorageError as exc:
            raise _ClaimLost(f"could not claim the request again: {exc}") from None
        if entry is not None:
            raise _ClaimLost("another run claimed the request while this one waited")


def entry_summary(entry: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """The two fields of a cache entry the store phase needs of a request it waits for (see ``spent``)."""
    return None if entry is None else {"owner": entry.get("owner"), "credits": entry.get("credits")}


def _number(value: Any) -> float:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else 0.0


class SubmitPhase(PlanPhase):
    """The batch operator's submit phase (a mixin of the operator, never used alone)."""

    def _client_reference(self, identity: SubmitIdentity | None, fingerprint: str) -> str:
        base = identity.digest() if identity is not None else "manual"
        return f"airflow-{hashlib.sha256(f'{base}/{fingerprint}'.encode()).hexdigest()[:32]}"

    def _submit_all(self, context: Context, plan: BatchPlan) -> dict[str, _Outcome]:
        """Decide every request from the request cache, and pay, once, for those that need it."""
        IdStash(context, plan.identity).restore(plan.cache)
        requests = plan.requests
        found = plan.cache.find_all(requests, threads=self.max_active_requests)
        hits = {fp: hit for fp, (hit, _) in found.items()} if self.reuse_cached else {}
        self._refuse_overwrites(plan, hits)
        outcomes: dict[str, _Outcome] = {}
        to_pay: list[str] = []
        for fingerprint in requests:
            entry = found[fingerprint][1]
            decided = self._decide(hits.get(fingerprint), entry, plan.cache.owner)
            if decided is None or decided.kind == "claimed_elsewhere":
                to_pay.append(fingerprint)
            else:
                outcomes[fingerprint] = decided
        counts = {kind: sum(1 for o in outcomes.values() if o.kind == kind) for kind in ("cached", "wait", "failed")}
        self.log.info("Batch: %d distinct requests; from the request cache: %s; to claim: %d", len(requests),
                      counts, len(to_pay))  # fmt: skip
        if to_pay:
            outcomes.update(self._pay(context, plan, to_pay, self._check_budget(plan, to_pay)))
        plan.cache.snapshot.save()  # a try that starts over after a kill reads the entries as they are now at once
        return outcomes

    def _check_budget(self, plan: BatchPlan, to_pay: list[str]) -> RunningBudget | None:
        """Log the estimate of what is to be paid, refuse the whole plan over a limit, track the rest.

        Only the requests to pay count: audio the request cache holds costs nothing.
        """
        characters = {item.fingerprint: item.characters for item in plan.items}
        counted = [characters[fp] for fp in to_pay]
        total = None if any(c is None for c in counted) else sum(c for c in counted if c is not None)
        what = f"batch {self.task_id!r} ({len(to_pay)} of {len(plan.requests)} requests to pay for)"
        estimate, budget = estimate_and_check(self.hook.vendor, self.tts_kind, total, requests=len(to_pay),
                                              max_characters=self.max_characters, max_credits=self.max_credits,
                                              what=what, log=self.log)  # fmt: skip
        rate = estimate.rate.credits_per_1000
        if budget.max_credits is None or rate is None:
            return None
        return RunningBudget(budget, {fp: credits_for(characters[fp], rate) or 0.0 for fp in to_pay})

    def _decide(self, hit: CachedAudio | None, entry: Mapping[str, Any] | None, owner: str) -> _Outcome | None:
        """What a request's cache entry says; None: claim it and pay."""
        if hit is not None:
            return _Outcome("cached", hit=hit)
        state = entry.get("state") if entry is not None else None
        if entry is None or state == "stored":  # nothing, or stored audio that is gone or changed
            return None
        if state == "rejected":
            return (
                None if self.retry_failed_items else _Outcome("failed", error=rejected_message(entry), retryable=False)
            )
        if state == "submitted" and entry.get("tts_task_id"):
            return _Outcome("wait", str(entry["tts_task_id"]), _number(entry.get("submitted_at")),
                            entry=entry_summary(entry))  # fmt: skip
        # Claimed: a create was (about to be) sent and its task id was never recorded.
        age = time.time() - _number(entry.get("requested_at"))
        if entry.get("owner") != owner and 0 <= age < CLAIM_WAIT_SECONDS:
            return _Outcome("claimed_elsewhere")
        if self.on_uncertain_submit == "resubmit":
            return None
        return _Outcome("failed", error=uncertain_message(entry, owner), retryable=False)

    def _pay(
        self, context: Context, plan: BatchPlan, fingerprints: list[str], budget: RunningBudget | None = None
    ) -> dict[str, _Outcome]:
        """Claim, create and record each request, ``max_active_requests`` at a time.

        The items are read once more for their fields, a chunk at a time (the worker never holds
        every text), and must be the items just planned.
        """
        stop = threading.Event()
        unsaved: dict[str, str] = {}
        auth: list[TtsAuthError] = []
        lock = threading.Lock()
        outcomes: dict[str, _Outcome] = {}

        from airflow_provider_tts.transport.slots import ThreadSlots

        # Creates at work at once: max_active_requests. One sleeping out a refused create's backoff
        # (nothing was created) lends its slot; a paid create keeps it until its id is recorded, so
        # a killed worker still loses at most max_active_requests answers (BA4).
        slots = ThreadSlots(self.max_active_requests)
        # Jobs wait for a slot first and only then take the next request in line, so requests go out
        # in item order whatever the thread that runs them (with one slot: one at a time, in order).
        line: deque[_Job] = deque()

        def pay() -> tuple[_Job, _Outcome]:
            with slots.held():
                job = line.popleft()
                outcome = self._pay_one(plan, job.fingerprint, job.fields, stop, budget)
            with lock:
                if outcome.unsaved:
                    unsaved[job.fingerprint] = str(outcome.tts_task_id)
                if isinstance(outcome.cause, TtsAuthError):
                    auth.append(outcome.cause)
            return job, outcome

        with ThreadPoolExecutor(slots.workers, thread_name_prefix="tts-batch-submit") as pool:
            # Streamed, not a chunk at a time: the next chunk's creates go while the last ones of
            # this chunk sleep out their backoffs (a chunk joined at its slowest create stalled
            # every slot for that long, PAY_CHUNK items at a time). At most two chunks of fields
            # are held: the one being read and the one in flight.
            sent: set[Future[tuple[_Job, _Outcome]]] = set()

            def send(job: _Job) -> None:
                line.append(job)
                sent.add(pool.submit(pay))

            def settle(until: int) -> None:
                while len(sent) > until:
                    done, _ = wait(sent, return_when=FIRST_COMPLETED)
                    for future in done:
                        sent.discard(future)
                        job, outcome = future.result()
                        # A create refused with nothing created (a 429 or 503 that outlived the
                        # transport's retries) is sent again in this try: it costs nothing, and the
                        # batch's pacer has already slowed every request down for it. Anything
                        # else stays as it ended.
                        if outcome.released and job.rounds < CREATE_ROUNDS and not stop.is_set():
                            send(_Job(job.fingerprint, job.fields, job.rounds + 1))
                        else:
                            outcomes[job.fingerprint] = outcome

            for chunk in self._fields_again(plan, set(fingerprints)):
                for fingerprint, fields in chunk.items():
                    send(_Job(fingerprint, fields))
                settle(PAY_CHUNK)
            settle(0)
        counts = {kind: sum(1 for o in outcomes.values() if o.kind == kind) for kind in ("cached", "wait", "failed")}
        self.log.info("Batch: claimed requests ended as %s", counts)
        if unsaved:
            where = IdStash(context, plan.identity).save(unsaved)
            raise TtsStorageError(
                f"could not record {len(unsaved)} paid task ids in the request cache of {plain_uri(plan.folder)}; "
                f"they are kept in {where}, and the next try waits for them and stores their audio without paying "
                "again"
            )
        if auth:
            raise auth[0]
        return outcomes

    def _fields_again(self, plan: BatchPlan, wanted: set[str]) -> Iterator[dict[str, dict[str, Any]]]:
        """The create fields of the ``wanted`` requests, read again, in chunks of :data:`PAY_CHUNK`.

        Every item must be the one planned moments before (same position, same identity): a file
        edited in between fails before the rest is paid for.
        """
        defaults = self._check_defaults(self.defaults)
        reference = self.vendor.client_reference_field
        chunk: dict[str, dict[str, Any]] = {}
        seen: set[str] = set()
        count = 0
        for index, raw in enumerate(self._raw_items(), start=1):
            count = index
            if index > len(plan.keys):
                raise TtsConfigError(changed_message(plan, "the file has more items than when it was read"))
            key, file_name, fields = self._item(raw, index, defaults)
            fingerprint, _ = self._fingerprint(index, key, fields)
            if item_key(key, file_name, fingerprint) != plan.keys[index - 1]:
                raise TtsConfigError(changed_message(plan, f"item {index} is not the item read moments before"))
            if fingerprint in wanted and fingerprint not in seen:
                seen.add(fingerprint)
                if reference is not None and fields.get(reference) is None:
                    fields[reference] = self._client_reference(plan.identity, fingerprint)
                chunk[fingerprint] = fields
                if len(chunk) >= PAY_CHUNK:
                    yield chunk
                    chunk = {}
        if count != len(plan.keys):
            raise TtsConfigError(changed_message(plan, "the file has fewer items than when it was read"))
        if chunk:
            yield chunk

    def _pay_one(
        self,
        plan: BatchPlan,
        fingerprint: str,
        fields: dict[str, Any],
        stop: threading.Event,
        budget: RunningBudget | None = None,
    ) -> _Outcome:
        """One request: claim it (or wait out another run's fresh claim), create it, record the task id."""
        for _ in range(3):
            if stop.is_set():
                return _Outcome("failed", error="not submitted: the batch stopped because the key was refused")
            if budget is not None and budget.crossed:  # what is in flight finishes; nothing more is sent
                return _Outcome("failed", error=budget.message(), retryable=False, budget=True)
            entry = plan.cache.claim(fingerprint, force=not self.reuse_cached)
            if entry is None:
                created = self._create(plan, fingerprint, fields, stop, budget)
                if created is None:
                    continue  # the claim changed hands while the create waited: decide again
                return created
            hit = plan.cache.hit(fingerprint, entry) if self.reuse_cached else None
            decided = self._decide(hit, entry, plan.cache.owner)
            if decided is not None and decided.kind == "claimed_elsewhere":
                decided = self._await_claim(plan, fingerprint)
                if decided is None:
                    continue  # the other run let go of it (nothing created): claim it again
            if decided is not None:
                return decided
            plan.cache.claim(fingerprint, force=True)  # the entry itself says to pay again
            created = self._create(plan, fingerprint, fields, stop, budget)
            if created is not None:
                return created
        return _Outcome("failed", error="not submitted: the request kept changing hands between runs")

    def _create(
        self,
        plan: BatchPlan,
        fingerprint: str,
        fields: dict[str, Any],
        stop: threading.Event,
        budget: RunningBudget | None = None,
    ) -> _Outcome | None:
        """The paid call, then its task id into the request cache (or, failing that, aside).

        None: the claim was let go while the create waited and could not be taken back before the
        send (see :class:`_ClaimGuard`); nothing was sent since, and the caller decides again.
        """
        short = fingerprint_hex(fingerprint)[:16]
        try:
            submission = self.hook.submit_task(self.tts_kind, fields, guard=_ClaimGuard(plan.cache, fingerprint,
                                                                                         self.log))  # fmt: skip
            task_id = submission.tts_task_id
        except _ClaimLost as lost:
            self.log.warning("Request %s was not sent again: %s", short, lost)
            return None
        except Exception as exc:
            self.log.warning("Request %s was not submitted: %s", short, exc)
            if isinstance(exc, TtsAuthError):
                stop.set()
                plan.cache.release(fingerprint)  # nothing was created: a retry with a good key sends it
                return _Outcome("failed", error=f"not submitted: {exc}"[:500], cause=exc)
            if outcome_unknown(exc):  # the claim stays: it says a create may have been billed
                return _Outcome("failed", error=uncertain_message({"error": str(exc)}, plan.cache.owner),
                                retryable=self.on_uncertain_submit == "resubmit")  # fmt: skip
            if isinstance(exc, TtsPermanentError):
                plan.cache.rejected(fingerprint, str(exc))
                return _Outcome("failed", error=f"rejected by the vendor: {exc}"[:500], retryable=False)
            plan.cache.release(fingerprint)
            return _Outcome("failed", error=f"not submitted: {exc}"[:500], released=True)
        if budget is not None:
            budget.report(fingerprint, submission.credits)
        ours = {"owner": plan.cache.owner, "credits": submission.credits}  # what the entry now says
        for attempt in range(RECORD_ATTEMPTS):
            try:
                plan.cache.submitted(fingerprint, task_id, credits=submission.credits)
                break
            except TtsStorageError as exc:
                if attempt + 1 < RECORD_ATTEMPTS:
                    time.sleep(RECORD_BACKOFF * 2**attempt)
                    continue
                self.log.error("Could not record task %s of request %s (%s); keeping it aside", task_id, short, exc)
                return _Outcome("wait", task_id, time.time(), unsaved=True, entry=ours)
        return _Outcome("wait", task_id, time.time(), entry=ours)

    def _await_claim(self, plan: BatchPlan, fingerprint: str) -> _Outcome | None:
        """Another run claimed the request moments ago: wait for its task id instead of paying again."""
        give_up = time.monotonic() + CLAIM_WAIT_SECONDS
        entry: Mapping[str, Any] | None = None
        while time.monotonic() < give_up:
            time.sleep(CLAIM_POLL_SECONDS)
            entry = plan.cache.read(fingerprint)
            if entry is None:
                return None
            hit = plan.cache.hit(fingerprint, entry) if self.reuse_cached else None
            decided = self._decide(hit, entry, plan.cache.owner)
            if decided is None or decided.kind != "claimed_elsewhere":
                return decided
        return _Outcome("failed", error=uncertain_message(entry or {}, plan.cache.owner))
