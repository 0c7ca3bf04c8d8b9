"""The fingerprint of a create request: what the vendor would be asked to make, as one hex string.

Two requests with the same fingerprint ask the same vendor API, for the same kind of audio, with
the same validated body, so the audio one of them produced can stand in for the other's. The
canonical JSON (sorted keys, no whitespace, non-ASCII kept as is) makes the hash independent of
dict order and of how the caller spelled the body.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any


def request_fingerprint(api: str, kind: str, body: Mapping[str, Any]) -> str:
    """sha256 hex of the canonical JSON of ``{"api", "kind", "body"}``; the body must be validated first."""
    canonical = json.dumps(
        {"api": api, "kind": kind, "body": dict(body)}, sort_keys=True, separators=(",", ":"), ensure_ascii=False
    )
    return hashlib.sha256(canonical.encode()).hexdigest()
