"""The constraints files: each satisfies pyproject.toml, and the environment running the tests is one.

``tools/lock.py`` cuts ``constraints/airflow-<minor>.txt``; the Makefile installs exactly one per
virtualenv. These checks are offline: a file that drifted from ``pyproject.toml`` (a new dependency,
a raised floor) fails here rather than at the next install, and an environment that is not what its
file says (a package installed by hand, a stale venv) fails before its results are trusted.
"""

from __future__ import annotations

import importlib.metadata

import pytest

from tools import lock


@pytest.mark.parametrize("entry", lock.MINORS, ids=lambda m: m.minor)
def test_each_file_satisfies_pyproject_and_names_its_patch(entry: lock.Minor) -> None:
    assert lock.check(entry) == []


def test_this_environment_is_exactly_its_minors_file() -> None:
    airflow = importlib.metadata.version("apache-airflow")
    [entry] = [m for m in lock.MINORS if m.patch == airflow]
    pins = lock.read_pins(entry.path)
    installed = {
        lock.normalise(dist.metadata["Name"]): dist.version
        for dist in importlib.metadata.distributions()
        if dist.metadata["Name"]
    }
    # What the file pins is installed at exactly that version (the test tools, pip and uv aside).
    wrong = {name: (version, installed.get(name)) for name, version in pins.items() if installed.get(name) != version}
    assert wrong == {}
    extra = sorted(set(installed) - set(pins) - {"airflow-provider-tts", "pip", "uv", "setuptools"})
    assert extra == [], f"installed but not in {entry.path.name}: {extra}"
