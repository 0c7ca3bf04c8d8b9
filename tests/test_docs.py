"""The generated reference in docs/ matches the code it documents."""

from __future__ import annotations

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_reference_is_up_to_date() -> None:
    spec = importlib.util.spec_from_file_location("gen_reference", ROOT / "tools" / "gen_reference.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert (ROOT / "docs" / "reference.md").read_text() == module.render(), (
        "docs/reference.md is out of date: run .venv/bin/python tools/gen_reference.py"
    )
