"""Write ``docs/reference.md`` from the public classes' signatures and docstrings.

The reference is generated, not written by hand, so it cannot drift from the code: a test
(``tests/test_docs.py``) regenerates it in memory and fails when the committed file differs.

    .venv/bin/python tools/gen_reference.py          # rewrite docs/reference.md
    .venv/bin/python tools/gen_reference.py --check  # exit 1 if it is out of date
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TARGET = ROOT / "docs" / "reference.md"

#: The public names DAG authors import, in the order a reader meets them.
PUBLIC: tuple[str, ...] = (
    "airflow_provider_tts.operators.text_to_storage:CambTtsToStorageOperator",
    "airflow_provider_tts.operators.text_to_storage:CambTextToSoundToStorageOperator",
    "airflow_provider_tts.operators.text_to_storage:RevidTtsToStorageOperator",
    "airflow_provider_tts.operators.text_to_storage:RevidSrtToSpeechToStorageOperator",
    "airflow_provider_tts.operators.text_to_storage:BaseTextToStorageOperator",
    "airflow_provider_tts.operators.tts:CambTtsStreamToStorageOperator",
    "airflow_provider_tts.operators.batch:CambTtsBatchToStorageOperator",
    "airflow_provider_tts.operators.batch:CambTextToSoundBatchToStorageOperator",
    "airflow_provider_tts.operators.batch:RevidTtsBatchToStorageOperator",
    "airflow_provider_tts.operators.batch:RevidSrtToSpeechBatchToStorageOperator",
    "airflow_provider_tts.operators.batch:BaseTextBatchToStorageOperator",
    "airflow_provider_tts.operators.long_text:CambTtsLongTextToStorageOperator",
    "airflow_provider_tts.operators.long_text:CambTtsStreamLongTextToStorageOperator",
    "airflow_provider_tts.operators.long_text:RevidTtsLongTextToStorageOperator",
    "airflow_provider_tts.operators.long_text:BaseLongTextToStorageOperator",
    "airflow_provider_tts.operators.tts:TtsSubmitOperator",
    "airflow_provider_tts.sensors.tts:TtsTaskSensor",
    "airflow_provider_tts.operators.tts:TtsAudioToStorageOperator",
    "airflow_provider_tts.triggers.tts:TtsTaskTrigger",
    "airflow_provider_tts.triggers.batch:TtsBatchTrigger",
    "airflow_provider_tts.waiting:WaitPolicy",
    "airflow_provider_tts.hooks.tts:TtsHook",
    "airflow_provider_tts.hooks.tts:TtsTaskStatus",
    "airflow_provider_tts.hooks.tts:CambAiHook",
    "airflow_provider_tts.hooks.tts:RevidTtsHook",
    "airflow_provider_tts.links:StoredAudioLink",
    "airflow_provider_tts.links:BatchManifestLink",
)

#: Constructor parameters every Airflow operator has; listing them would bury the provider's own.
_BASE_PARAMS = frozenset({"self", "kwargs", "args"})


def _signature(obj: type) -> str:
    try:
        sig = inspect.signature(obj.__init__)
    except (TypeError, ValueError):
        return ""
    params = [p for name, p in sig.parameters.items() if name not in _BASE_PARAMS]
    lines = []
    for p in params:
        text = p.name
        if p.annotation is not inspect.Parameter.empty:
            annotation = p.annotation if isinstance(p.annotation, str) else inspect.formatannotation(p.annotation)
            text += f": {annotation}"
        if p.name == "deferrable":
            text += " = <[operators] default_deferrable>"  # read from the config at import time
        elif p.default is not inspect.Parameter.empty:
            text += f" = {p.default!r}"
        lines.append(f"    {text},")
    return f"{obj.__name__}(\n" + "\n".join(lines) + "\n)" if lines else f"{obj.__name__}()"


def _docstring(obj: type) -> str:
    # reST literals (``x``) read as Markdown code spans (`x`).
    doc = (inspect.getdoc(obj) or "(no docstring)").replace("``", "`")
    out = []
    for line in doc.splitlines():
        stripped = line.strip()
        if stripped.startswith(":param "):
            name, _, rest = stripped[len(":param ") :].partition(":")
            out.append(f"- `{name.strip()}`: {rest.strip()}")
        elif line.startswith("    ") and out and out[-1].startswith("- `"):
            out[-1] += " " + stripped  # continuation of a :param: entry
        else:
            out.append(line)
    return "\n".join(out)


def render() -> str:
    parts = [
        "# Reference",
        "",
        "Generated from the code by `tools/gen_reference.py`; do not edit by hand. Every class below is",
        "importable from the module named in its heading.",
        "",
    ]
    for spec in PUBLIC:
        module_name, _, attr = spec.partition(":")
        obj = getattr(importlib.import_module(module_name), attr)
        parts += [f"## `{attr}`", "", f"`from {module_name} import {attr}`", ""]
        signature = _signature(obj)
        if signature:
            parts += ["```python", signature, "```", ""]
        parts += [_docstring(obj), ""]
    return "\n".join(parts).rstrip() + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if docs/reference.md is out of date")
    args = parser.parse_args(argv)
    text = render()
    if args.check:
        current = TARGET.read_text() if TARGET.exists() else ""
        if current != text:
            sys.stderr.write(f"{TARGET.relative_to(ROOT)} is out of date: run tools/gen_reference.py\n")
            return 1
        return 0
    TARGET.write_text(text)
    sys.stdout.write(f"wrote {TARGET.relative_to(ROOT)}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
