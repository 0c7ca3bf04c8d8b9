"""The vendor units, one per API, and the one place that maps a connection type to its vendor."""

from __future__ import annotations

from airflow_provider_tts.exceptions import TtsConfigError
from airflow_provider_tts.vendors.base import Vendor
from airflow_provider_tts.vendors.camb import CambAi
from airflow_provider_tts.vendors.revid import RevidTts

VENDORS: dict[str, type[Vendor]] = {"camb_ai": CambAi, "revid_tts": RevidTts}


def vendor_class(conn_type: str | None, conn_id: str) -> type[Vendor]:
    """The vendor a connection speaks to, from its connection type."""
    try:
        return VENDORS[conn_type or ""]
    except KeyError:
        raise TtsConfigError(
            f"connection {conn_id!r} has type {conn_type!r}; expected one of {', '.join(VENDORS)}"
        ) from None


__all__ = ["VENDORS", "CambAi", "RevidTts", "Vendor", "vendor_class"]
