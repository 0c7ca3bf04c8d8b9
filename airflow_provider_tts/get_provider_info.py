"""Provider metadata read by Airflow's ProvidersManager through the ``apache_airflow_provider`` entry point.

Airflow calls this during discovery in every component, so it returns a literal and imports nothing.
The connection forms are declared here as data (``conn-fields``, ``ui-field-behaviour``): the UI
renders them without importing the hook.
"""

from __future__ import annotations

from typing import Any

_RETRY_AND_TIMEOUT_FIELDS: dict[str, Any] = {
    "connect_timeout": {
        "label": "Connect timeout (s)",
        "description": "Seconds to wait for a TCP/TLS connection to the API. Default 10.",
        "schema": {"type": ["number", "null"], "exclusiveMinimum": 0},
    },
    "read_timeout": {
        "label": "Read timeout (s)",
        "description": "Seconds to wait between bytes of a response. Default 60.",
        "schema": {"type": ["number", "null"], "exclusiveMinimum": 0},
    },
    "max_retries": {
        "label": "Max retries",
        "description": "Retries of one request on 429, 5xx, timeouts and dropped connections. Default 5.",
        "schema": {"type": ["integer", "null"], "minimum": 0, "maximum": 20},
    },
    "retry_backoff": {
        "label": "Retry backoff (s)",
        "description": "First wait between retries; doubles each time, with jitter. Default 1.",
        "schema": {"type": ["number", "null"], "minimum": 0},
    },
    "retry_max_backoff": {
        "label": "Max retry wait (s)",
        "description": "Upper bound of one wait between retries, Retry-After included. Default 60.",
        "schema": {"type": ["number", "null"], "minimum": 0},
    },
    "requests_per_second": {
        "label": "Requests per second",
        "description": (
            "Most API requests started per second, over every task and trigger on this connection in one "
            "worker or triggerer process. Empty: no limit."
        ),
        "schema": {"type": ["number", "null"], "exclusiveMinimum": 0},
    },
    "max_in_flight": {
        "label": "Max requests in flight",
        "description": (
            "Most API requests at once, over every task and trigger on this connection in one worker or "
            "triggerer process. Empty: no limit."
        ),
        "schema": {"type": ["integer", "null"], "minimum": 1},
    },
    "credits_per_1000_characters": {
        "label": "Credits per 1,000 characters",
        "description": (
            "The account's price, for the storing operators' estimates and max_credits. Default: the vendor's "
            "published price (RevidAPI 10; Camb.ai publishes none)."
        ),
        "schema": {"type": ["number", "null"], "minimum": 0},
    },
    "max_characters": {
        "label": "Max characters per task",
        "description": "Default max_characters of the storing operators: a request or batch plan over it is refused.",
        "schema": {"type": ["integer", "null"], "minimum": 0},
    },
    "max_credits": {
        "label": "Max credits per task",
        "description": "Default max_credits of the storing operators: an estimate over it is refused before paying.",
        "schema": {"type": ["number", "null"], "minimum": 0},
    },
    "allow_private_audio_hosts": {
        "label": "Allow private audio hosts",
        "description": (
            "Let audio URLs and redirects lead to private or loopback addresses (automatic when the "
            "API base is on loopback). Link-local and cloud-metadata addresses (169.254.0.0/16, fe80::/10, "
            "fd00:ec2::/32, 100.100.100.200, in any IPv6 encoding) and metadata host names are never allowed."
        ),
        "schema": {"type": ["boolean", "null"]},
    },
    "allow_http_api": {
        "label": "Allow a plain-http API base",
        "description": (
            "Send the API key over http:// to a host that is not this machine (a trusted internal proxy). "
            "Default: the API base must be https, or http only to localhost/127.0.0.0/8/::1 (the emulator)."
        ),
        "schema": {"type": ["boolean", "null"]},
    },
    "allow_http_audio_hosts": {
        "label": "Allow plain-http audio hosts",
        "description": (
            "Let audio URLs use http:// on public hosts too (default: https only, http for allowed private hosts)."
        ),
        "schema": {"type": ["boolean", "null"]},
    },
}


def get_provider_info() -> dict[str, Any]:
    """Return the provider's metadata; it validates against Airflow's ``provider_info.schema.json``."""
    return {
        "package-name": "airflow-provider-tts",
        "name": "Text-to-speech job APIs (Camb.ai, RevidAPI)",
        "description": (
            "Submit text-to-speech tasks to Camb.ai and RevidAPI, wait for them without holding a "
            "worker slot, and stream the finished audio into object storage."
        ),
        "versions": ["0.1.0"],
        "config": {
            "tts": {
                "description": (
                    "Where the text-to-speech operators may read items and write audio. Each option is a "
                    "comma-separated list of URI prefixes; empty allows every URI."
                ),
                "options": {
                    "allowed_destinations": {
                        "description": (
                            "URI prefixes a storing operator may write audio, manifests and its request cache "
                            "under. A destination elsewhere (e.g. one taken from a run's conf) is refused "
                            "before anything is requested."
                        ),
                        "version_added": "0.2.0",
                        "type": "string",
                        "example": "s3://audio-bucket/tts/, file:///data/audio/",
                        "default": "",
                    },
                    "allowed_items_paths": {
                        "description": (
                            "URI prefixes a batch operator may read its items file from. A file elsewhere is "
                            "refused before it is read."
                        ),
                        "version_added": "0.2.0",
                        "type": "string",
                        "example": "s3://audio-bucket/inbox/",
                        "default": "",
                    },
                },
            }
        },
        "integrations": [
            {
                "integration-name": "Camb.ai",
                "external-doc-url": "https://docs.camb.ai/",
                "tags": ["service"],
            },
            {
                "integration-name": "RevidAPI",
                "external-doc-url": "https://revidapi.com/",
                "tags": ["service"],
            },
        ],
        "hooks": [
            {"integration-name": "Camb.ai", "python-modules": ["airflow_provider_tts.hooks.tts"]},
            {"integration-name": "RevidAPI", "python-modules": ["airflow_provider_tts.hooks.tts"]},
        ],
        "triggers": [
            {
                "integration-name": "Camb.ai",
                "python-modules": ["airflow_provider_tts.triggers.tts", "airflow_provider_tts.triggers.batch"],
            },
            {
                "integration-name": "RevidAPI",
                "python-modules": ["airflow_provider_tts.triggers.tts", "airflow_provider_tts.triggers.batch"],
            },
        ],
        "sensors": [
            {"integration-name": "Camb.ai", "python-modules": ["airflow_provider_tts.sensors.tts"]},
            {"integration-name": "RevidAPI", "python-modules": ["airflow_provider_tts.sensors.tts"]},
        ],
        "operators": [
            {
                "integration-name": "Camb.ai",
                "python-modules": [
                    "airflow_provider_tts.operators.tts",
                    "airflow_provider_tts.operators.submit",
                    "airflow_provider_tts.operators.audio_to_storage",
                    "airflow_provider_tts.operators.stream_to_storage",
                    "airflow_provider_tts.operators.text_to_storage",
                    "airflow_provider_tts.operators.batch",
                    "airflow_provider_tts.operators.long_text",
                ],
            },
            {
                "integration-name": "RevidAPI",
                "python-modules": [
                    "airflow_provider_tts.operators.tts",
                    "airflow_provider_tts.operators.submit",
                    "airflow_provider_tts.operators.audio_to_storage",
                    "airflow_provider_tts.operators.stream_to_storage",
                    "airflow_provider_tts.operators.text_to_storage",
                    "airflow_provider_tts.operators.batch",
                    "airflow_provider_tts.operators.long_text",
                ],
            },
        ],
        # The Audio view (Airflow 3.1+; nothing on 3.0): airflow_provider_tts/ui/plugin.py.
        "plugins": [{"name": "tts_audio_view", "plugin-class": "airflow_provider_tts.ui.plugin.TtsAudioViewPlugin"}],
        "extra-links": [
            "airflow_provider_tts.links.StoredAudioLink",
            "airflow_provider_tts.links.BatchManifestLink",
        ],
        "connection-types": [
            {
                "connection-type": "camb_ai",
                "hook-class-name": "airflow_provider_tts.hooks.tts.CambAiHook",
                "hook-name": "Camb.ai Text-to-Speech",
                "ui-field-behaviour": {
                    "hidden-fields": ["schema", "login", "port", "extra"],
                    "relabeling": {"password": "API key", "host": "API base URL"},
                    "placeholders": {
                        "host": "https://client.camb.ai/apis (leave empty for the default)",
                        "password": "your Camb.ai API key (x-api-key)",
                    },
                },
                "conn-fields": dict(_RETRY_AND_TIMEOUT_FIELDS),
            },
            {
                "connection-type": "revid_tts",
                "hook-class-name": "airflow_provider_tts.hooks.tts.RevidTtsHook",
                "hook-name": "RevidAPI Text-to-Speech",
                "ui-field-behaviour": {
                    "hidden-fields": ["schema", "login", "port", "extra"],
                    "relabeling": {"password": "API key", "host": "Create API base URL"},
                    "placeholders": {
                        "host": "https://api.revidapi.com/paid (leave empty for the default)",
                        "password": "your RevidAPI key (x-api-key)",
                    },
                },
                "conn-fields": {
                    "status_base_url": {
                        "label": "Status API base URL",
                        "description": "Where task status is polled. Default https://tts.revidapi.com/api.",
                        "schema": {"type": ["string", "null"]},
                    },
                    **_RETRY_AND_TIMEOUT_FIELDS,
                },
            },
        ],
    }
