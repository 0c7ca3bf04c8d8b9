"""The loopback S3 server fixtures of the storage operator's tests, shared with the slow tests."""

from __future__ import annotations

from tests.operators.conftest import moto_endpoint, s3

__all__ = ["moto_endpoint", "s3"]
