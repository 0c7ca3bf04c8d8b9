"""Names a module exports but imports only when first asked for: what keeps a DAG parse cheap.

A DAG file that imports an operator should not pay for what only ``execute`` or a trigger needs
(pydantic request models, aiohttp, boto3). A module lists such names with the module each lives in,
and :func:`lazy_names` gives it the ``__getattr__`` (PEP 562) that imports one on first access and
keeps it in the module's namespace, so the second access is an ordinary lookup.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Mapping
from typing import Any


def lazy_names(module: str, names: Mapping[str, str]) -> Callable[[str], Any]:
    """The ``__getattr__`` of ``module`` for ``names``: each public name -> the module that defines it.

    A relative module (``"aio"``) is below ``module``'s package, for a package's ``__init__``; pass a
    dotted absolute name otherwise.
    """

    def __getattr__(name: str) -> Any:
        home = names.get(name)
        if home is None:
            raise AttributeError(f"module {module!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(home if "." in home else f"{module}.{home}"), name)
        setattr(sys.modules[module], name, value)
        return value

    return __getattr__
