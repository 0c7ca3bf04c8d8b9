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
    return {conn_type: _load(conn_type) for conn_type in _BY_CONN_TYPE}


def vendor_class(conn_type: str | None, conn_id: str) -> type[Vendor]:
    """The vendor a connection speaks to, from its connection type."""
    if conn_type not in _BY_CONN_TYPE:
        raise TtsConfigError(
            f"connection {conn_id!r} has type {conn_type!r}; expected one of {', '.join(_BY_CONN_TYPE)}"
        )
    return _load(conn_type)


def _load(conn_type: str) -> type[Vendor]:
    """The vendor class of a known connection type, its module imported now if it was not yet."""
    module, cls = _BY_CONN_TYPE[conn_type]
    vendor: type[Vendor] = getattr(importlib.import_module(f"{__name__}.{module}"), cls)
    return vendor


class VendorOf:
    """A class attribute that reads as a vendor's class, which it imports on its first read.

    The one-task, batch and long-text operators name their vendor in the class body; ``vendor =
    VendorOf("camb_ai")`` reads as :class:`CambAi`, exactly as ``vendor = CambAi`` did, but the
    vendor's module (its request checks and response parsers) loads when an operator is built or
    run, not when a DAG file imports the operator module.
    """

    def __init__(self, conn_type: str) -> None:
        if conn_type not in _BY_CONN_TYPE:
            raise ValueError(f"no vendor for connection type {conn_type!r}; expected one of {', '.join(_BY_CONN_TYPE)}")
        self.conn_type = conn_type
        self._vendor: type[Vendor] | None = None

    def __get__(self, instance: object, owner: type | None = None) -> type[Vendor]:
        if self._vendor is None:
            self._vendor = _load(self.conn_type)
        return self._vendor

    def __repr__(self) -> str:
        return f"VendorOf({self.conn_type!r})"


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY, "VENDORS"})


__all__ = ["VENDORS", "CambAi", "RevidTts", "Vendor", "VendorOf", "vendor_class", "vendors"]
