"""Costs (issue 25): estimates before paying, budgets that refuse before the first create, what was spent.

Against the emulator over loopback: every storing operator family logs and returns its estimate
(characters, requests, credits); ``max_characters`` / ``max_credits`` (the operator's, or the
connection's default) refuse a request or a whole batch plan before any create and before anything
is written, with a non-retryable error naming the estimate and the limit, at parse time when the
text is literal; a stream the vendor charged more for fails after keeping the paid audio; a batch
whose vendor reports more credits than estimated stops submitting. Neither task API reports
credits (nor does the emulator's), so that batch case controls the vendor's answer by patching
``RevidTts.reported_credits``, the one place a create answer's credits are read.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from airflow.sdk import Connection

from airflow_provider_tts.compat import AirflowFailException, TaskDeferred
from airflow_provider_tts.connection import parse_connection
from airflow_provider_tts.costs import Budget, Estimate, Rate, RunningBudget
from airflow_provider_tts.exceptions import TtsBudgetExceededError, TtsConfigError
from airflow_provider_tts.operators.batch import CambTtsBatchToStorageOperator, RevidTtsBatchToStorageOperator
from airflow_provider_tts.operators.text_to_storage import (
    CambTtsToStorageOperator,
    RevidSrtToSpeechToStorageOperator,
    RevidTtsToStorageOperator,
)
from airflow_provider_tts.operators.tts import CambTtsStreamToStorageOperator
from airflow_provider_tts.vendors import CambAi, RevidTts
from tests.conftest import FIELDS, ConnFactory
from tests.operators.conftest import ti_context
from tests.operators.test_batch import CAMB_DEFAULTS, batch, context, creates, manifest
from tests.operators.test_submit import SRT, FakeTI, StateStore

TEXT = "The night train leaves at nine from platform four."  # 50 characters


def _ctx() -> dict[str, Any]:
    return {"ti": FakeTI(task_id="speak"), "task_state_store": StateStore()}


def _revid(conn: str, folder: Path, **kw: Any) -> RevidTtsToStorageOperator:
    kw.setdefault("text", TEXT)
    return RevidTtsToStorageOperator(task_id="speak", tts_conn_id=conn, destination=f"file://{folder}/",
                                     deferrable=False, poll_interval=0.05, **kw)  # fmt: skip


def _files(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.is_file()]


def _streams(emu: Any) -> int:
    return sum(1 for r in emu.requests() if r.get("path", "").endswith("/tts-stream"))


def _output(capsys: pytest.CaptureFixture[str]) -> str:
    captured = capsys.readouterr()
    return captured.out + captured.err


# ------------------------------------------------------------------------------ estimates


def test_the_estimate_is_logged_and_returned(
    emu: Any, make_conn: ConnFactory, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    result = _revid(make_conn("revid_tts"), tmp_path).execute(_ctx())
    assert (result["characters"], result["requests"], result["credits"]) == (50, 1, None)
    assert result["estimated_credits"] == pytest.approx(0.5)  # RevidAPI: 10 credits per 1,000 characters
    logged = _output(capsys)
    assert "about to send 50 characters in 1 request, ~0.50 credits" in logged
    assert "rate 10 per 1,000; from the revid_tts price table" in logged

    again = _revid(make_conn("revid_tts"), tmp_path).execute(_ctx())  # the request cache: nothing spent
    assert (again["cached"], again["characters"], again["requests"], again["credits"]) == (True, 0, 0, 0)
    assert again["estimated_credits"] == 0


def test_camb_has_no_price_unless_the_connection_sets_one(emu: Any, make_conn: ConnFactory, tmp_path: Path) -> None:
    fields = FIELDS["camb_ai/tts"]  # "Hello from the emulator": 23 characters
    plain = CambTtsToStorageOperator(task_id="a", tts_conn_id=make_conn("camb_ai"), destination=f"file://{tmp_path}/a/",
                                     deferrable=False, poll_interval=0.05, **fields).execute(_ctx())  # fmt: skip
    assert (plain["characters"], plain["requests"], plain["estimated_credits"]) == (23, 1, None)
    priced = make_conn("camb_ai", credits_per_1000_characters=2)
    result = CambTtsToStorageOperator(task_id="a", tts_conn_id=priced, destination=f"file://{tmp_path}/b/",
                                      deferrable=False, poll_interval=0.05, **fields).execute(_ctx())  # fmt: skip
    assert result["estimated_credits"] == pytest.approx(0.046)


def test_srt_characters_are_the_cues_spoken_text(emu: Any, make_conn: ConnFactory, tmp_path: Path) -> None:
    op = RevidSrtToSpeechToStorageOperator(
        task_id="srt", tts_conn_id=make_conn("revid_tts"), srt=SRT, destination=f"file://{tmp_path}/",
        deferrable=False, poll_interval=0.05,
    )  # fmt: skip
    result = op.execute(_ctx())
    assert result["characters"] == len("Hello") + len("again")
    assert result["estimated_credits"] == pytest.approx(0.1)


def test_the_text_is_counted_as_the_validated_body_holds_it() -> None:
    body = RevidTts.validate_create("tts", {"text": "  Hello  "})  # the model strips surrounding whitespace
    assert RevidTts.spoken_characters("tts", body) == 5
    assert CambAi.spoken_characters("text-to-sound", {"prompt": "rain"}) == 4
    assert RevidTts.spoken_characters("srt-to-speech", {"srt_url": "https://example.com/a.srt"}) is None


# ------------------------------------------------------------------------------ one-task limits


def test_a_literal_text_over_max_characters_fails_when_the_dag_is_parsed(tmp_path: Path) -> None:
    with pytest.raises(TtsBudgetExceededError, match=r"50 characters, more than max_characters=40") as info:
        RevidTtsToStorageOperator(task_id="speak", text=TEXT, destination=f"file://{tmp_path}/", max_characters=40)
    assert isinstance(info.value, AirflowFailException)  # fails without using up retries
    with pytest.raises(TtsBudgetExceededError, match="max_characters=10"):
        CambTtsStreamToStorageOperator(task_id="s", text=TEXT, language="en-us", voice_id=1,
                                       destination=f"file://{tmp_path}/", max_characters=10)  # fmt: skip
    RevidTtsToStorageOperator(task_id="ok", text=TEXT, destination=f"file://{tmp_path}/", max_characters=50)


def test_a_templated_text_over_the_limit_is_refused_at_execute_before_any_create(
    emu: Any, make_conn: ConnFactory, tmp_path: Path
) -> None:
    op = _revid(make_conn("revid_tts"), tmp_path, text="{{ params.text }}", max_characters=40)
    op.text = TEXT  # what rendering makes of it
    with pytest.raises(TtsBudgetExceededError) as info:
        op.execute(_ctx())
    message = str(info.value)
    for words in ("about to send 50 characters", "max_characters=40 (set on the operator)", "nothing was sent",
                  "raise max_characters"):  # fmt: skip
        assert words in message
    assert (info.value.estimate, info.value.limit, info.value.limit_name) == (50, 40, "max_characters")
    assert (creates(emu), _files(tmp_path)) == (0, [])


def test_max_credits_is_checked_at_the_price_in_use(emu: Any, make_conn: ConnFactory, tmp_path: Path) -> None:
    long_text = "word " * 60  # 300 characters, 3 credits at RevidAPI's 10 per 1,000 (299 once stripped)
    with pytest.raises(
        TtsBudgetExceededError, match=r"~2\.99 credits .* exceeds max_credits=2 \(set on the operator\)"
    ):
        _revid(make_conn("revid_tts"), tmp_path, text=long_text, max_credits=2).execute(_ctx())
    cheaper = make_conn("revid_tts", credits_per_1000_characters=5)  # the account's own price
    result = _revid(cheaper, tmp_path, text=long_text, max_credits=2).execute(_ctx())
    assert result["estimated_credits"] == pytest.approx(1.495)
    assert creates(emu) == 1


def test_max_credits_without_a_price_is_refused_not_passed(emu: Any, make_conn: ConnFactory, tmp_path: Path) -> None:
    op = CambTtsToStorageOperator(task_id="a", tts_conn_id=make_conn("camb_ai"), destination=f"file://{tmp_path}/",
                                  max_credits=100, deferrable=False, **FIELDS["camb_ai/tts"])  # fmt: skip
    with pytest.raises(TtsConfigError, match=r"max_credits=100 .* cannot be checked: camb_ai publishes no tts price"):
        op.execute(_ctx())
    assert creates(emu) == 0


def test_an_srt_url_cannot_be_counted_so_a_limit_is_refused(emu: Any, make_conn: ConnFactory, tmp_path: Path) -> None:
    op = RevidSrtToSpeechToStorageOperator(
        task_id="srt", tts_conn_id=make_conn("revid_tts"), max_characters=1000, srt_url="https://example.com/a.srt",
        destination=f"file://{tmp_path}/",
    )  # fmt: skip
    with pytest.raises(TtsConfigError, match="characters are unknown"):
        op.execute(_ctx())
    assert creates(emu) == 0


def test_the_connection_default_applies_and_the_operator_overrides_it(
    emu: Any, make_conn: ConnFactory, tmp_path: Path
) -> None:
    conn = make_conn("revid_tts", max_characters=20, max_credits=0.1)
    with pytest.raises(
        TtsBudgetExceededError, match=r"max_characters=20 \(the default of connection 'revid_tts_test_0'\)"
    ):
        _revid(conn, tmp_path).execute(_ctx())
    with pytest.raises(TtsBudgetExceededError, match=r"max_credits=0\.10 \(the default of connection"):
        _revid(conn, tmp_path, max_characters=100).execute(_ctx())
    assert creates(emu) == 0
    result = _revid(conn, tmp_path, max_characters=100, max_credits=1).execute(_ctx())
    assert (result["characters"], creates(emu)) == (50, 1)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"max_characters": "lots"}, "'max_characters' must be an integer"),
        ({"max_characters": 1.5}, "'max_characters' must be an integer"),
        ({"max_characters": -1}, "'max_characters' must be an integer in"),
        ({"max_credits": True}, "'max_credits' must be a number"),
        ({"max_credits": [5]}, "'max_credits' must be a number"),
        ({"credits_per_1000_characters": "ten"}, "'credits_per_1000_characters' must be a number"),
        ({"credits_per_1000_characters": -2}, "'credits_per_1000_characters' must be a number in"),
        ({"max_budget": 5}, "unknown extra 'max_budget'"),
    ],
)
def test_bad_cost_extras_are_refused(extra: dict[str, Any], message: str) -> None:
    conn = Connection(conn_id="c", conn_type="revid_tts", password="k", extra=json.dumps(extra))
    with pytest.raises(TtsConfigError, match=message):
        parse_connection(conn, default_api_base_url=RevidTts.default_api_base_url,
                         default_status_base_url=RevidTts.default_status_base_url)  # fmt: skip


def test_cost_extras_are_read_as_numbers() -> None:
    extra = {"max_characters": "5000", "max_credits": 12.5, "credits_per_1000_characters": "8"}
    conn = Connection(conn_id="c", conn_type="camb_ai", password="k", extra=json.dumps(extra))
    settings = parse_connection(conn, default_api_base_url=CambAi.default_api_base_url, default_status_base_url=None)
    assert (settings.max_characters, settings.max_credits, settings.credits_per_1000_characters) == (5000, 12.5, 8.0)


@pytest.mark.parametrize(
    ("name", "value"), [("max_characters", "10"), ("max_characters", True), ("max_characters", -1),
                        ("max_characters", 2.5), ("max_credits", "5"), ("max_credits", float("nan"))],
)  # fmt: skip
def test_bad_limit_arguments_fail_when_the_dag_is_parsed(name: str, value: Any, tmp_path: Path) -> None:
    with pytest.raises(TtsConfigError, match=name):
        RevidTtsToStorageOperator(task_id="speak", text=TEXT, destination=f"file://{tmp_path}/", **{name: value})
    with pytest.raises(TtsConfigError, match=name):
        RevidTtsBatchToStorageOperator(task_id="b", items=[TEXT], destination=f"file://{tmp_path}/", **{name: value})


# ------------------------------------------------------------------------------ stream


def test_the_stream_returns_what_the_vendor_charged(emu: Any, make_conn: ConnFactory, tmp_path: Path) -> None:
    op = CambTtsStreamToStorageOperator(
        task_id="s", tts_conn_id=make_conn("camb_ai"), text=TEXT, language="en-us", voice_id=20303,
        output_format="wav", destination=f"file://{tmp_path}/",
    )  # fmt: skip
    result = op.execute(ti_context())
    assert (result["characters"], result["requests"], result["credits"], result["estimated_credits"]) == (
        50,
        1,
        50,
        None,
    )


def test_a_stream_charged_over_max_credits_keeps_the_audio_and_fails(
    emu: Any, make_conn: ConnFactory, tmp_path: Path
) -> None:
    """The estimate (a connection price of 1 per 1,000: 0.05) passes; the vendor reports 50 credits."""
    conn = make_conn("camb_ai", credits_per_1000_characters=1)

    def stream() -> CambTtsStreamToStorageOperator:
        return CambTtsStreamToStorageOperator(task_id="s", tts_conn_id=conn, text=TEXT, language="en-us",
                                              voice_id=20303, output_format="wav", max_credits=5,
                                              destination=f"file://{tmp_path}/")  # fmt: skip

    with pytest.raises(TtsBudgetExceededError, match=r"the vendor reported 50 credits .* above max_credits=5") as info:
        stream().execute(ti_context())
    assert "a re-run takes it from the request cache" in str(info.value)
    assert len([p for p in _files(tmp_path) if p.suffix == ".wav"]) == 1  # paid for, so kept
    again = stream().execute(ti_context())  # the re-run pays nothing
    assert (again["cached"], again["credits"], _streams(emu)) == (True, 0, 1)


def test_a_stream_over_the_estimate_limit_sends_nothing(emu: Any, make_conn: ConnFactory, tmp_path: Path) -> None:
    op = CambTtsStreamToStorageOperator(task_id="s", tts_conn_id=make_conn("camb_ai", credits_per_1000_characters=100),
                                        text=TEXT, language="en-us", voice_id=20303, max_credits=1,
                                        destination=f"file://{tmp_path}/")  # fmt: skip
    with pytest.raises(TtsBudgetExceededError, match=r"~5 credits \(rate 100 per 1,000; from connection"):
        op.execute(ti_context())
    assert (_streams(emu), _files(tmp_path)) == (0, [])


# ------------------------------------------------------------------------------ batch

TEXTS = [f"Item number {n} of the nightly batch." for n in range(1, 6)]  # 35 characters each


def test_a_batch_plan_over_budget_creates_nothing_and_writes_nothing(
    emu: Any, make_conn: ConnFactory, tmp_path: Path
) -> None:
    conn = make_conn("revid_tts")
    with pytest.raises(TtsBudgetExceededError, match=r"5 of 5 requests to pay for\): about to send 175 characters in "
                       r"5 requests, ~1\.75 credits .* exceeds max_credits=1 "):  # fmt: skip
        batch(RevidTtsBatchToStorageOperator, conn, tmp_path, items=TEXTS, max_credits=1).execute(context())
    with pytest.raises(TtsBudgetExceededError, match=r"175 characters .* exceeds max_characters=100"):
        batch(RevidTtsBatchToStorageOperator, conn, tmp_path, items=TEXTS, max_characters=100).execute(context())
    assert (creates(emu), _files(tmp_path)) == (0, [])


def test_a_batch_budget_counts_only_what_the_request_cache_does_not_hold(
    emu: Any, make_conn: ConnFactory, tmp_path: Path
) -> None:
    conn = make_conn("revid_tts", max_characters=40)  # one new text a night fits, the whole list does not
    first = batch(RevidTtsBatchToStorageOperator, conn, tmp_path, items=TEXTS[:4], max_characters=1000)
    assert first.execute(context())["requests"] == 4
    result = batch(RevidTtsBatchToStorageOperator, conn, tmp_path, items=TEXTS).execute(context(run_id="r2"))
    assert (result["stored"], result["cached"], result["characters"], result["requests"]) == (1, 4, 35, 1)
    assert creates(emu) == 5


def test_manifest_rows_and_the_batch_result_say_what_was_spent(
    emu: Any, make_conn: ConnFactory, tmp_path: Path
) -> None:
    conn = make_conn("camb_ai", credits_per_1000_characters=10)
    items = ["One river.", "Two birds.", "One river."]  # the third repeats the first: paid once
    result = batch(CambTtsBatchToStorageOperator, conn, tmp_path, items=items, defaults=CAMB_DEFAULTS).execute(
        context()
    )
    rows = manifest(tmp_path)
    assert [(r["characters"], r["requests"], r["credits"]) for r in rows] == [(10, 1, None), (10, 1, None), (0, 0, 0)]
    assert rows[2]["duplicate_of"] == 1
    assert (result["characters"], result["requests"], result["credits"]) == (20, 2, None)
    assert result["estimated_credits"] == pytest.approx(0.2)

    again = batch(CambTtsBatchToStorageOperator, conn, tmp_path, items=items, defaults=CAMB_DEFAULTS)
    rerun = again.execute(context(run_id="r2"))
    assert [(r["characters"], r["requests"], r["credits"]) for r in manifest(tmp_path)] == [(0, 0, 0)] * 3
    assert (rerun["characters"], rerun["requests"], rerun["credits"], rerun["estimated_credits"]) == (0, 0, 0, 0)


def test_a_batch_charged_above_its_estimate_stops_submitting(
    emu: Any, make_conn: ConnFactory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Estimated 0.35 credits an item (1.75 in all, under max_credits=3); the vendor reports 2 per create.

    After the first create the projection is 2 + 4 x 0.35 = 3.40: the batch sends nothing more.
    """
    monkeypatch.setattr(RevidTts, "reported_credits", lambda self, resp: 2)
    op = batch(RevidTtsBatchToStorageOperator, make_conn("revid_tts"), tmp_path, items=TEXTS, max_credits=3,
               max_active_requests=1)  # fmt: skip
    with pytest.raises(TtsBudgetExceededError, match=r"stopped submitting: not submitted: the vendor reported 2 "
                       r"credits.* ~3\.40 credits, over max_credits=3 \(set on the operator\)\. 4 of 5 items were "
                       r"not submitted and the 1 stored are kept") as info:  # fmt: skip
        op.execute(context())
    assert isinstance(info.value, AirflowFailException)
    assert creates(emu) == 1
    rows = manifest(tmp_path)
    assert (rows[0]["status"], rows[0]["characters"], rows[0]["requests"], rows[0]["credits"]) == ("stored", 35, 1, 2)
    for row in rows[1:]:
        assert (row["status"], row["retryable"], row["requests"], row["credits"]) == ("failed", False, 0, 0)
        assert row["error"].startswith("not submitted: the vendor reported 2 credits")


def test_a_deferred_batch_stopped_by_its_budget_fails_after_the_resume(
    emu: Any, make_conn: ConnFactory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The "not submitted" rows travel in the wait list through the deferral; the resume stores and fails."""
    monkeypatch.setattr(RevidTts, "reported_credits", lambda self, resp: 2)
    conn = make_conn("revid_tts")

    def op() -> RevidTtsBatchToStorageOperator:
        return batch(RevidTtsBatchToStorageOperator, conn, tmp_path, items=TEXTS, max_credits=3,
                     max_active_requests=1, deferrable=True)  # fmt: skip

    with pytest.raises(TaskDeferred):
        op().execute(context())
    emu.end_pending(*[task["task_id"] for task in emu.tasks()])
    with pytest.raises(TtsBudgetExceededError, match="4 of 5 items were not submitted"):
        op().execute_complete(context(), {"status": "done", "pending": 0})
    assert [row["status"] for row in manifest(tmp_path)] == ["stored"] + ["failed"] * 4
    assert creates(emu) == 1


def test_a_batch_whose_charges_stay_within_the_budget_reports_them(
    emu: Any, make_conn: ConnFactory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(RevidTts, "reported_credits", lambda self, resp: 1)
    op = batch(RevidTtsBatchToStorageOperator, make_conn("revid_tts"), tmp_path, items=TEXTS, max_credits=10)
    result = op.execute(context())
    assert (result["stored"], result["requests"], result["credits"]) == (5, 5, 5)
    assert result["estimated_credits"] == pytest.approx(1.75)


def test_the_running_budget_moves_by_what_the_vendor_reports() -> None:
    budget = RunningBudget(Budget(max_credits=3, origins={"max_credits": "set on the operator"}), {"a": 1, "b": 1})
    budget.report("a", None)  # nothing said: the estimate stands
    budget.report("a", 1)
    assert not budget.crossed
    budget.report("b", 3)
    assert budget.crossed
    assert "~4 credits, over max_credits=3" in budget.message()
    estimate = Estimate(1000, 1, Rate(None, "camb_ai publishes no tts price"))
    Budget(max_characters=1000).check(estimate, "ok")  # at the limit passes


# ------------------------------------------------------------------------------ lineage


def test_the_openlineage_run_facet_says_what_was_spent(emu: Any, make_conn: ConnFactory, tmp_path: Path) -> None:
    from openlineage.client.serde import Serde

    op = _revid(make_conn("revid_tts"), tmp_path)
    op.execute(_ctx())
    facet = Serde.to_dict(op.get_openlineage_facets_on_complete(None).run_facets["ttsCost"])
    assert {k: v for k, v in facet.items() if not k.startswith("_")} == {
        "characters": 50, "requests": 1, "estimatedCredits": 0.5,
    }  # fmt: skip

    job = batch(RevidTtsBatchToStorageOperator, make_conn("revid_tts"), tmp_path / "b", items=TEXTS[:2])
    job.execute(context())
    lineage = job.get_openlineage_facets_on_complete(None)
    facet = Serde.to_dict(lineage.run_facets["ttsCost"])
    assert {k: v for k, v in facet.items() if not k.startswith("_")} == {
        "characters": 70, "requests": 2, "estimatedCredits": 0.7,
    }  # fmt: skip
    (output,) = lineage.outputs
    assert (output.namespace, output.name, output.outputFacets["outputStatistics"].fileCount) == (
        "file", str(tmp_path / "b"), 2,
    )  # fmt: skip
