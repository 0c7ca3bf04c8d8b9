"""The GCS emulator (``gcp-storage-emulator``) as a loopback server for the ``gs://`` tests.

Run as ``python -m tests.operators._gcs_server PORT``. Two things differ from the package's own
``gcp-storage-emulator start``, both for the tests' sake:

* every request line is printed to stdout (flushed), so a test counts the requests per file the way
  the ``s3://`` tests read moto's access log;
* cancelling a resumable upload (``DELETE`` on its session URI, what gcsfs's ``discard()`` sends and
  real GCS answers with 499) removes the session instead of answering 501, which gcsfs would retry
  for seconds;
* an upload with ``ifGenerationMatch=0`` (create only if absent, what ``pipe_file(mode="create")``
  sends) is refused with 412 when the object exists, as GCS does; the emulator ignores the
  precondition. The check and the create hold one lock, so of two at once exactly one creates.

and it serves connections from a thread each, as GCS does (gcsfs keeps several open).
"""

from __future__ import annotations

import io
import json
import re
import sys
import threading
from functools import partial
from http.server import ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from gcp_storage_emulator.server import RequestHandler
from gcp_storage_emulator.storage import Storage

_CREATE_LOCK = threading.Lock()


class _Handler(RequestHandler):  # type: ignore[misc]
    protocol_version = "HTTP/1.1"  # keep-alive, as GCS: one connection per file would measure the emulator

    def log_message(self, format: str, *args: Any) -> None:
        print(f"{self.command} {self.path}", flush=True)

    def do_DELETE(self) -> None:
        parts = urlsplit(self.path)
        upload_id = parse_qs(parts.query).get("upload_id")
        if parts.path.startswith("/upload/") and upload_id:
            self.storage.delete_resumable_file_obj(upload_id[0])
            self.send_response(499)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        super().do_DELETE()

    def do_POST(self) -> None:
        parts = urlsplit(self.path)
        if parse_qs(parts.query).get("ifGenerationMatch") != ["0"]:
            super().do_POST()
            return
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        bucket = parts.path.split("/b/", 1)[1].split("/", 1)[0]
        named = re.search(rb'\{[^{}]*"name"[^{}]*\}', body)  # the JSON part of the multipart upload
        name = json.loads(named.group(0))["name"] if named else parse_qs(parts.query).get("name", [""])[0]
        stream = self.rfile
        with _CREATE_LOCK:
            try:
                self.storage.get_file_obj(bucket, name)
                exists = True
            except Exception:
                exists = False
            if exists:
                self.send_response(412)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.rfile = io.BufferedReader(io.BytesIO(body))  # type: ignore[assignment]
            try:
                super().do_POST()
            finally:
                self.rfile = stream


def main(port: int) -> None:
    server = ThreadingHTTPServer(("127.0.0.1", port), partial(_Handler, Storage(use_memory_fs=True)))
    server.daemon_threads = True
    print(f"listening on {server.server_address[1]}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main(int(sys.argv[1]))
