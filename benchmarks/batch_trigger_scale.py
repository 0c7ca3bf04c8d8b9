"""What one ``TtsBatchTrigger`` costs per item, against the same items waited for by one ``TtsTaskTrigger`` each.

Issue 29: a batch task defers once, with one trigger for all its items; the alternative is one
deferred task, and so one ``TtsTaskTrigger``, per item. For each N (default 1,000 and 10,000) the
emulator runs in its own process (its CLI, on uvloop) and N Camb.ai tasks are created up front
that complete ``--task-seconds`` after the triggers start plus a random fraction of one poll
interval, exactly as in ``trigger_scale.py`` (whose driver this reuses). Four runs, each over fresh
tasks and in a fresh trigger process:

1. *batch*: the items' batch record written to a temporary file:// folder and ONE
   ``TtsBatchTrigger`` (``concurrency`` = ``MAX_ACTIVE_REQUESTS``, the batch's most, poll interval
   5 s) built from its serialized form, as the triggerer builds it from the row, run to its event;
2. *per-item*: N ``TtsTaskTrigger``s in one process (trigger_scale's default, shared-pool strategy);
3. and 4. the same two, with the process SIGKILLed ``--kill-after`` seconds into the wait (a
   triggerer host that died) and a fresh process started at once with the same trigger kwargs:
   how long until the new process's first status request reaches the emulator (from the process's
   start, and from the trigger's creation), until every item was asked about, until the event, and
   whether any item was lost or reported twice.

Figures per item: the trigger process's CPU time (from creating the triggers to the last event)
per item and per status request, status requests per item (counted by the emulator), peak RSS and
its increase over the process's baseline per item, the time from the last task's completion to the
(last) event. The machine may be shared: its load average is printed and written with the figures.

    .venv/bin/python benchmarks/batch_trigger_scale.py [--sizes 1000,10000] [--task-seconds 30]
    .venv/bin/python benchmarks/batch_trigger_scale.py --quick      # smoke run: 1,000 items, 8 s tasks, prints only
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from benchmarks._batch_trigger_runs import FORMS, Row, measure  # noqa: E402
from benchmarks._report import table, write_section  # noqa: E402
from benchmarks._trigger_scale_report import mb  # noqa: E402
from benchmarks._trigger_scale_runs import SRC, Emulator, log, run_driver  # noqa: E402
from benchmarks.trigger_scale import add_wait_arguments  # noqa: E402

COMMAND = ".venv/bin/python benchmarks/batch_trigger_scale.py"
#: Issue 29's target: the batch form at least this many times cheaper in CPU per item.
TARGET_RATIO = 2.0


def load() -> str:
    """The load average, as ``uptime`` shows it: the figures are read against how busy the machine was."""
    return ", ".join(f"{x:.2f}" for x in os.getloadavg())


async def main_async(args: argparse.Namespace) -> list[Row]:
    emulator = Emulator(Path(args.workdir), args.task_seconds)
    emulator.start()
    log(f"emulator (uvloop) at {emulator.url}")
    rows: list[Row] = []
    lead = {"ready": 8.0, "rate": 1500.0}
    try:
        async with aiohttp.ClientSession() as control:
            # Every status request of a run must stay in the log to time the restarts and to check
            # that each item the batch counted as ended was asked about after it ended.
            size = max(args.sizes) * 16 + 10_000
            async with control.post(f"{emulator.url}/_emulator/config", json={"request_log_size": size}) as resp:
                resp.raise_for_status()
        plan = [(n, form, resume) for n in args.sizes for resume in (False, True) for form in FORMS]
        plan = [(n, form, resume) for n, form, resume in plan if not resume or form in args.resume_forms]
        for index, (n, form, resume) in enumerate(plan):
            log(f"run {index + 1}/{len(plan)}: {n:,} items, {form}{', killed and restarted' if resume else ''}")
            row = await measure(emulator, n, form, args, lead, resume)
            log(
                f"  -> {row.cpu_ms_per_item:.3f} CPU ms/item, {row.cpu_ms_per_request:.3f} ms/request, "
                f"{row.requests_per_item:.2f} requests/item, peak {mb(row.peak_rss)} MB "
                f"({row.rss_kb_per_item:.2f} KB/item), late {row.late:.2f} s, {row.event}, errors {row.errors}, "
                f"lost {row.lost}, twice {row.twice}, wrong {row.wrong}, unconfirmed {row.unconfirmed}; "
                f"restart: first request {row.to_first_request:.2f} s, all polled {row.to_all_polled:.2f} s, "
                f"event {row.to_event:.2f} s; other processes {row.other_cores:.2f} cores; load {load()}"
            )
            for note in row.notes:
                log(f"  note: {note}")
            rows.append(row)
    finally:
        emulator.stop()
    return rows


def report(rows: list[Row], args: argparse.Namespace, loads: tuple[str, str]) -> str:
    """The section's Markdown: per-item figures, the ratio against the target, the restarts."""
    scale = [r for r in rows if r.killed_after != r.killed_after]  # NaN: not a restart run
    restarts = [r for r in rows if r.killed_after == r.killed_after]
    by = {(r.n, r.form): r for r in scale}
    lines = [
        f"N Camb.ai tasks on the emulator (its own process, on uvloop), complete {args.task_seconds:g} s after the "
        f"triggers start plus a random fraction of the {args.poll_interval:g} s poll interval; waited for either by "
        "ONE `TtsBatchTrigger` reading the batch record from a file:// folder (`concurrency` = "
        "`MAX_ACTIVE_REQUESTS`, built from its serialized kwargs as the triggerer does) or by N `TtsTaskTrigger`s "
        "in one process (the shared pool, as in *Triggerer scale*). Fresh tasks and a fresh trigger process per run. "
        f"**Machine load** (`uptime` load average, 1/5/15 min) at the start: {loads[0]}; at the end: {loads[1]}; "
        "the machine (2 CPUs) was shared with other work, which inflates the wall-clock figures (lateness, "
        "restart times) more than the CPU-time ones.",
        "",
        table(
            [
                "N items",
                "form",
                "CPU ms / item",
                "CPU ms / status request",
                "requests / item",
                "peak RSS MB",
                "RSS increase KB / item",
                "last completion -> event s",
                "event",
                "errors / lost / twice / wrong",
                "other processes (cores)",
            ],
            [
                [
                    f"{r.n:,}",
                    FORMS[r.form],
                    f"**{r.cpu_ms_per_item:.3f}**",
                    f"{r.cpu_ms_per_request:.3f}",
                    f"{r.requests_per_item:.2f}",
                    mb(r.peak_rss),
                    f"{r.rss_kb_per_item:.2f}",
                    f"{r.late:.2f}" + (f" (each item p99 {r.late_p99:.2f})" if r.late_p99 == r.late_p99 else ""),
                    r.event,
                    f"{r.errors} / {r.lost} / {r.twice} / {r.wrong}",
                    f"{r.other_cores:.2f}",
                ]
                for r in scale
            ],
        ),
        "*CPU*: the trigger process's CPU time from building the trigger(s) to the last event (reading the record, "
        "resolving the connection, every poll, every event). *Requests*: status requests the emulator counted. "
        "*RSS increase*: peak RSS minus the RSS before the trigger(s) were built (Airflow imported, connection "
        "resolved). *Last completion -> event*: wall time from the last task's completion to the batch's event (for "
        "N triggers: to the last of their events), i.e. how late the downstream work could start.",
        "",
    ]
    for n in sorted({r.n for r in scale}):
        batch, per_item = by.get((n, "batch")), by.get((n, "per-item"))
        if batch is None or per_item is None:
            continue
        ratio = per_item.cpu_ms_per_item / batch.cpu_ms_per_item
        verdict = (
            "**met**" if ratio >= TARGET_RATIO and not (batch.lost or batch.wrong or batch.twice) else "**not met**"
        )
        lines.append(
            f"- {n:,} items: per-item triggers / batch = **{ratio:.1f}x** CPU per item (target >= {TARGET_RATIO:g}x: "
            f"{verdict}), {per_item.requests_per_item / batch.requests_per_item:.1f}x status requests per item, "
            f"{per_item.rss_kb_per_item / max(batch.rss_kb_per_item, 1e-9):.1f}x RSS increase per item; "
            f"the batch's event came {batch.late:.2f} s after the last completion, the last per-item event "
            f"{per_item.late:.2f} s after it."
        )
    lines += findings(scale, args)
    if restarts:
        lines += [
            "",
            f"**Resume after a triggerer kill**: the trigger process was SIGKILLed about {args.kill_after:g} s "
            "into the wait and a fresh one started at once with the same serialized trigger kwargs (same "
            "`started_at`, so "
            "the same poll schedule); times from the new process's start (Python and Airflow imports, the "
            "connection resolved) and from the trigger(s)' creation, until the first status request was answered "
            "by the emulator, until every item had been asked about once, and until the (last) event. *Unconfirmed*: "
            "items the batch counted as ended that no status request after their completion asked about (0 = every "
            "count is backed by an answer).",
            "",
            table(
                [
                    "N items",
                    "form",
                    "killed after s",
                    "start -> first request s",
                    "created -> first request s",
                    "start -> every item asked s",
                    "start -> event s",
                    "last completion -> event s",
                    "lost / twice / wrong",
                    "unconfirmed",
                    "CPU ms / item (new process)",
                    "requests / item (both processes)",
                ],
                [
                    [
                        f"{r.n:,}",
                        FORMS[r.form],
                        f"{r.killed_after:.1f}",
                        f"**{r.to_first_request:.2f}**",
                        f"{r.created_to_first_request:.3f}",
                        f"{r.to_all_polled:.2f}",
                        f"{r.to_event:.2f}",
                        f"{r.late:.2f}",
                        f"{r.lost} / {r.twice} / {r.wrong}",
                        f"{r.unconfirmed}" if r.form == "batch" else "-",
                        f"{r.cpu_ms_per_item:.3f}",
                        f"{r.requests_per_item:.2f}",
                    ]
                    for r in restarts
                ],
            ),
        ]
    notes = [f"- {r.n:,} {r.form}{' (restart)' if r in restarts else ''}: {note}" for r in rows for note in r.notes]
    if notes:
        lines += ["", "Notes:", "", *notes]
    return "\n".join(lines) + "\n"


def findings(scale: list[Row], args: argparse.Namespace) -> list[str]:
    """What the figures say beyond the table, computed: where a row is not what it seems."""
    from airflow_provider_tts.batch.operator import MAX_ACTIVE_REQUESTS

    out = []
    scheduled = args.task_seconds / args.poll_interval + 1  # polls a TtsTaskTrigger makes on schedule
    for r in scale:
        if r.form == "per-item" and r.requests_per_item < scheduled / 2:
            out.append(
                f"- {r.n:,} per-item triggers made {r.requests_per_item:.2f} status requests per item where their "
                f"schedule asks about {scheduled:.0f}: the process could not keep its {args.poll_interval:g} s "
                "schedule "
                "on this machine at this load, so its CPU per item is understated and the ratio above is a lower "
                "bound (per status request the batch was "
                + ", ".join(
                    f"{r.cpu_ms_per_request / b.cpu_ms_per_request:.1f}x cheaper"
                    for b in scale
                    if b.n == r.n and b.form == "batch"
                )
                + ")."
            )
        groups = -(-r.n // MAX_ACTIVE_REQUESTS)
        if r.form == "batch" and r.late > args.poll_interval:
            out.append(
                f"- The {r.n:,}-item batch's event came {r.late:.1f} s after the last completion: once every item "
                f"has ended, the last round polls {groups:,} groups of {MAX_ACTIVE_REQUESTS} one after another, each "
                f"waiting for its slowest request ({1000 * r.late / groups:.0f} ms per group here, the poll interval's "
                "phase included), so this delay grows with N / concurrency times the vendor's response time."
            )
    return out


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    add_wait_arguments(parser, "1000,10000", "items")
    parser.add_argument("--kill-after", type=float, default=10.0, help="seconds into the wait the process is killed")
    parser.add_argument(
        "--resume-forms", default="batch,per-item", help="forms whose restart is measured (%(default)s; empty: none)"
    )
    parser.add_argument("--no-confirm", dest="confirm", action="store_false", help="skip the unconfirmed-items check")
    parser.add_argument(
        "--quick", action="store_true", help="smoke run: 1,000 items, 8 s tasks, kill at 3 s; prints only"
    )
    parser.add_argument("--no-write", action="store_true", help="print only; leave BENCHMARKS.md alone")
    parser.add_argument("--keep-logs", action="store_true", help="keep the work directory (logs, records)")
    args = parser.parse_args(argv)
    if args.quick:
        args.sizes, args.task_seconds, args.kill_after, args.no_write = "1000", 8.0, 3.0, True
    args.sizes = [int(s.replace("_", "").replace(",", "")) for s in str(args.sizes).split(",") if s.strip()]
    args.resume_forms = [f.strip() for f in args.resume_forms.split(",") if f.strip()]
    unknown = set(args.resume_forms) - set(FORMS)
    if unknown:
        parser.error(f"unknown forms {sorted(unknown)}; expected some of {', '.join(FORMS)}")
    return args


def command_line(args: argparse.Namespace) -> str:
    defaults = parse_args([])
    extra = [
        f"--{name.replace('_', '-')} {','.join(map(str, value)) if isinstance(value, list) else f'{value:g}'}"
        for name in ("sizes", "task_seconds", "poll_interval", "kill_after", "resume_forms")
        if (value := getattr(args, name)) != getattr(defaults, name)
    ]
    return " ".join([COMMAND, *extra])


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    SRC[0] = str(ROOT)
    workdir = Path(tempfile.mkdtemp(prefix="batch-trigger-scale-"))
    args.workdir = str(workdir)
    started, first_load = time.time(), load()
    log(f"work directory {workdir}; sizes {args.sizes}; tasks {args.task_seconds:g} s; load {first_load}")
    rows = run_driver(main_async(args), workdir, args.keep_logs)
    if rows is None:
        return 130
    body = report(rows, args, (first_load, load()))
    print()
    print(body)
    if not args.no_write:
        title = "Batch trigger scale: one TtsBatchTrigger vs one TtsTaskTrigger per item"
        write_section("batch-trigger-scale", title, command_line(args), body)
        log("wrote the batch-trigger-scale section of BENCHMARKS.md")
    log(f"finished in {time.time() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
