"""Write one benchmark's figures into its own section of ``BENCHMARKS.md``.

Each benchmark owns a section delimited by HTML comments, so benchmarks can be re-run one at a
time without clobbering the others' figures, and every section carries the command that produced
it and when it ran.
"""

from __future__ import annotations

import datetime as _dt
import platform
import re
from pathlib import Path

BENCHMARKS_MD = Path(__file__).resolve().parent.parent / "BENCHMARKS.md"

_HEADER = (
    "# Benchmarks\n\n"
    "Figures written by the scripts in `benchmarks/`; each section names the command that produced it.\n"
    "Run them all with `make bench`.\n"
)


def machine_line() -> str:
    """A one-line description of the machine, so figures are read against the right hardware."""
    import os

    return (
        f"{platform.python_implementation()} {platform.python_version()}, {os.cpu_count()} CPUs, {platform.machine()}"
    )


def write_section(name: str, title: str, command: str, body: str) -> None:
    """Replace (or append) the section ``name`` of BENCHMARKS.md with ``body``."""
    stamp = _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    section = (
        f"<!-- begin:{name} -->\n## {title}\n\n"
        f"Command: `{command}`  \nRun: {stamp} on {machine_line()}\n\n{body.rstrip()}\n"
        f"<!-- end:{name} -->\n"
    )
    text = BENCHMARKS_MD.read_text() if BENCHMARKS_MD.exists() else _HEADER
    pattern = re.compile(rf"<!-- begin:{re.escape(name)} -->.*?<!-- end:{re.escape(name)} -->\n?", re.S)
    if pattern.search(text):
        text = pattern.sub(lambda _m: section, text)
    else:
        text = text.rstrip() + "\n\n" + section
    BENCHMARKS_MD.write_text(text)


def table(headers: list[str], rows: list[list[object]]) -> str:
    """Render a markdown table."""
    out = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    out += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(out) + "\n"
