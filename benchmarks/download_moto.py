"""A moto S3 server (server mode) in its own process, for ``benchmarks/download.py``; counts requests.

Binds 127.0.0.1 on a free port, prints ``{"endpoint": "http://127.0.0.1:PORT"}`` on one line, and
serves until SIGTERM/SIGINT. Objects moto spools to disk go to ``$TMPDIR`` (the benchmark points it
at its own scratch directory on the repository's disk).

Every S3 request is counted by kind (``PutObject``, ``UploadPart``, ``HeadObject``, ...):
``GET /_bench/requests`` returns the counts as JSON, ``POST /_bench/reset`` zeroes them (``_bench``
is not a valid bucket name, so no S3 request can collide).

``--latency-ms N`` holds every S3 request N ms before moto answers it (a sleep, not CPU: the
threaded server keeps answering others), as a store across a network would: moto on loopback
answers a small PutObject in about a millisecond, S3 from a worker in its region in tens.

    .venv/bin/python benchmarks/download_moto.py [--latency-ms N]
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import signal
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import parse_qs

for _name, _value in {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_EC2_METADATA_DISABLED": "true",
}.items():
    os.environ.setdefault(_name, _value)


def operation(environ: dict[str, Any]) -> str:
    """The S3 operation a request is, from its method, path and query (enough for what the benchmark makes)."""
    method = environ["REQUEST_METHOD"]
    query = parse_qs(environ.get("QUERY_STRING", ""), keep_blank_values=True)
    has_key = "/" in environ.get("PATH_INFO", "/").strip("/")
    if method == "PUT":
        if "partNumber" in query:
            return "UploadPartCopy" if environ.get("HTTP_X_AMZ_COPY_SOURCE") else "UploadPart"
        if environ.get("HTTP_X_AMZ_COPY_SOURCE"):
            return "CopyObject"
        return "PutObject" if has_key else "CreateBucket"
    if method == "POST":
        if "uploads" in query:
            return "CreateMultipartUpload"
        if "uploadId" in query:
            return "CompleteMultipartUpload"
        return "DeleteObjects" if "delete" in query else "POST"
    if method == "DELETE":
        return "AbortMultipartUpload" if "uploadId" in query else "DeleteObject" if has_key else "DeleteBucket"
    if method == "HEAD":
        return "HeadObject" if has_key else "HeadBucket"
    if not has_key:
        return "ListMultipartUploads" if "uploads" in query else "ListObjects"
    return "ListParts" if "uploadId" in query else "GetObject"


#: Operations that write (what "one write request per file" counts).
WRITES = {"PutObject", "CreateMultipartUpload", "UploadPart", "CompleteMultipartUpload", "CopyObject",
          "UploadPartCopy", "DeleteObject", "DeleteObjects", "AbortMultipartUpload"}  # fmt: skip


def counting(app: Callable[..., Iterable[bytes]], latency: float = 0.0) -> Callable[..., Iterable[bytes]]:
    counts: collections.Counter[str] = collections.Counter()
    lock = threading.Lock()

    def wrapped(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if path.startswith("/_bench/"):
            if path == "/_bench/reset":
                with lock:
                    counts.clear()
            with lock:
                body = json.dumps(dict(counts)).encode()
            start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
            return [body]
        with lock:
            counts[operation(environ)] += 1
        if latency:
            time.sleep(latency)
        return app(environ, start_response)

    return wrapped


def main() -> None:
    from moto.server import ThreadedMotoServer

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--latency-ms", type=float, default=0.0, help="hold every S3 request this long first")
    args = parser.parse_args()

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        server._server.app = counting(server._server.app, args.latency_ms / 1000)  # type: ignore[union-attr]
        _, port = server.get_host_and_port()
        print(json.dumps({"endpoint": f"http://127.0.0.1:{port}"}), flush=True)
        stop.wait()
    finally:
        server.stop()


if __name__ == "__main__":
    main()
