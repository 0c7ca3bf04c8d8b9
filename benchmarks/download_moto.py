"""A moto S3 server (server mode) in its own process, for ``benchmarks/download.py``.

Binds 127.0.0.1 on a free port, prints ``{"endpoint": "http://127.0.0.1:PORT"}`` on one line, and
serves until SIGTERM/SIGINT. Objects moto spools to disk go to ``$TMPDIR`` (the benchmark points it
at its own scratch directory on the repository's disk).

    .venv/bin/python benchmarks/download_moto.py
"""

from __future__ import annotations

import json
import os
import signal
import threading

for _name, _value in {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_EC2_METADATA_DISABLED": "true",
}.items():
    os.environ.setdefault(_name, _value)


def main() -> None:
    from moto.server import ThreadedMotoServer

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        _, port = server.get_host_and_port()
        print(json.dumps({"endpoint": f"http://127.0.0.1:{port}"}), flush=True)
        stop.wait()
    finally:
        server.stop()


if __name__ == "__main__":
    main()
