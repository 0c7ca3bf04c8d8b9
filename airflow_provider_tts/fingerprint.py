"""One fingerprint of a create request, so "the same request" means the same thing everywhere.

The submit operator records it next to the vendor task id and re-attaches to an earlier task only
while the fingerprint matches (a cleared task whose text was edited submits afresh rather than
reusing the old audio); a request cache can key on it too. It covers the vendor, the kind and the
*validated* body, so two spellings of one request (``voice_id="7"`` and ``7``, fields in another
order, ``None`` left out) hash alike, and anything that changes what the vendor would synthesise
changes the hash. The body never holds the API key (that travels in a header), so neither does the
fingerprint's input.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

#: Prefix of every fingerprint: names the algorithm, so a future change cannot be mistaken for a match.
PREFIX = "sha256:"


def canonical_json(value: Any) -> str:
    """JSON with sorted keys, no whitespace and non-ASCII kept as is: one text per value.

    Values JSON cannot express natively (a pydantic ``HttpUrl``, a ``Decimal``) are written as
    their ``str()``, which is also what goes over the wire for them.
    """
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


def request_fingerprint(api: str, kind: str, body: Mapping[str, Any]) -> str:
    """``sha256:<hex>`` of the canonical JSON of ``{"api", "kind", "body"}``.

    :param api: the vendor (``camb_ai``, ``revid_tts``).
    :param kind: the task kind (``tts``, ``text-to-sound``, ``srt-to-speech``).
    :param body: the create body as validated for the vendor (what would be sent).
    """
    text = canonical_json({"api": api, "kind": kind, "body": dict(body)})
    return PREFIX + hashlib.sha256(text.encode("utf-8")).hexdigest()
