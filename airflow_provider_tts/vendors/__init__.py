"""The vendor units, one per API, and the one place that maps a connection type to its vendor.

The vendor classes carry their request models (pydantic), so they are imported on first use,
never when a DAG file imports an operator module.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from airflow_provider_tts.exceptions import TtsConfigError
from airflow_provider_tts.lazy import lazy_names

if TYPE_CHECKING:
    from airflow_provider_tts.vendors.base import Vendor
    from airflow_provider_tts.vendors.camb import CambAi
    from airflow_provider_tts.vendors.revid import RevidTts

#: Connection type -> the module and class of its vendor.
_BY_CONN_TYPE = {"camb_ai": ("camb", "CambAi"), "revid_tts": ("revid", "RevidTts")}
_LAZY = {"Vendor": "base", "CambAi": "camb", "RevidTts": "revid"}


_lazy = lazy_names(__name__, _LAZY)


def __getattr__(name: str) -> Any:
    if name == "VENDORS":
        return vendors()
    return _lazy(name)


def vendors() -> dict[str, type[Vendor]]:
    """Every vendor class, by connection type."""
    return {
        conn_type: getattr(importlib.import_module(f"{__name__}.{module}"), cls)
        for conn_type, (module, cls) in _BY_CONN_TYPE.items()
    }


def vendor_class(conn_type: str | None, conn_id: str) -> type[Vendor]:
    """The vendor a connection speaks to, from its connection type."""
    try:
        module, cls = _BY_CONN_TYPE[conn_type or ""]
    except KeyError:
        raise TtsConfigError(
            f"connection {conn_id!r} has type {conn_type!r}; expected one of {', '.join(_BY_CONN_TYPE)}"
        ) from None
    vendor: type[Vendor] = getattr(importlib.import_module(f"{__name__}.{module}"), cls)
    return vendor


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY, "VENDORS"})


__all__ = ["VENDORS", "CambAi", "RevidTts", "Vendor", "vendor_class", "vendors"]
