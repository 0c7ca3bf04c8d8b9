"""Builders shared by the pure parser tests: vendors on fixed settings, responses from literals."""

from __future__ import annotations

import json
from typing import Any

from pydantic import SecretStr

from airflow_provider_tts.connection import ConnectionSettings
from airflow_provider_tts.vendors import CambAi, RevidTts
from airflow_provider_tts.vendors.base import ApiResponse

KEY = "sk-test-0123456789abcdef"


def camb() -> CambAi:
    return CambAi(
        ConnectionSettings(
            conn_id="c",
            conn_type="camb_ai",
            api_key=SecretStr(KEY),
            api_base_url="https://client.camb.ai/apis",
            status_base_url="https://client.camb.ai/apis",
        )
    )


def revid() -> RevidTts:
    return RevidTts(
        ConnectionSettings(
            conn_id="r",
            conn_type="revid_tts",
            api_key=SecretStr(KEY),
            api_base_url="https://api.revidapi.com/paid",
            status_base_url="https://tts.revidapi.com/api",
        )
    )


def resp(status: int, body: Any, content_type: str = "application/json", **headers: str) -> ApiResponse:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    hdrs = {"content-type": content_type, **{k.replace("_", "-").lower(): v for k, v in headers.items()}}
    return ApiResponse(status, hdrs, raw, "https://example.invalid/x")
