"""The harness's REST client rides out an api-server that fails now and then (a loaded machine).

Against a loopback HTTP server scripted to answer 500 (what Airflow's api-server answers when its
SQLite database is locked for a moment) before it answers for real: a GET is tried again, a plain
POST is not (it might have been carried out), and ``trigger`` (whose POST names its run id, so a
repeat is harmless) is tried again and takes a 409 on the repeat as the earlier attempt's success.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
import requests

from tools.airflow_rest import AirflowRestClient, LocalAirflowError


class _Scripted(BaseHTTPRequestHandler):
    """Answers each request with the next (status, body) of the server's script, then 200 ``{}``."""

    def _answer(self) -> None:
        server: Any = self.server
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        server.seen.append((self.command, self.path, json.loads(body) if body else None))
        status, payload = server.script.pop(0) if server.script else (200, {})
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = do_PATCH = _answer

    def log_message(self, *args: Any) -> None:
        return None


class _Client(AirflowRestClient):
    def __init__(self, url: str) -> None:
        self.api_url = url
        self._session = requests.Session()
        self._log = lambda message: None


@pytest.fixture
def server() -> Iterator[Any]:
    httpd: Any = ThreadingHTTPServer(("127.0.0.1", 0), _Scripted)
    httpd.script, httpd.seen = [], []
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield httpd
    finally:
        httpd.shutdown()
        httpd.server_close()


def _client(server: Any) -> _Client:
    return _Client(f"http://127.0.0.1:{server.server_address[1]}")


def test_a_get_is_tried_again_after_transient_failures(server: Any) -> None:
    server.script = [(500, {"detail": "database is locked"}), (503, {}), (200, {"dag_id": "d"})]
    assert _client(server).request("GET", "/dags/d") == {"dag_id": "d"}
    assert len(server.seen) == 3


def test_a_client_error_is_not_tried_again(server: Any) -> None:
    server.script = [(404, {"detail": "no such dag"})]
    with pytest.raises(LocalAirflowError, match="HTTP 404"):
        _client(server).request("GET", "/dags/d")
    assert len(server.seen) == 1


def test_a_get_gives_up_after_its_budget(server: Any) -> None:
    server.script = [(500, {})] * 50
    with pytest.raises(LocalAirflowError, match="HTTP 500"):
        _client(server).request("GET", "/dags/d", retry_for=0.5)
    assert 2 <= len(server.seen) <= 4


def test_a_plain_post_is_not_repeated(server: Any) -> None:
    server.script = [(500, {})]
    with pytest.raises(LocalAirflowError, match="HTTP 500"):
        _client(server).request("POST", "/connections", json_body={"connection_id": "c"}, ok=(201,))
    assert len(server.seen) == 1


def test_trigger_repeats_its_post_with_the_same_run_id_and_takes_409_as_done(server: Any) -> None:
    # The first POST created the run but its answer was a 500; the repeat is told the run exists.
    server.script = [(500, {}), (409, {"detail": "exists"})]
    run_id = _client(server).trigger("d", conf={"x": 1})
    posts = [body for method, _, body in server.seen if method == "POST"]
    assert len(posts) == 2
    assert posts[0] == posts[1]
    assert posts[0]["dag_run_id"] == run_id
    assert run_id.startswith("manual__")


def test_trigger_does_not_take_409_on_its_first_post_as_success(server: Any) -> None:
    server.script = [(409, {"detail": "a run with that id exists"})]
    with pytest.raises(LocalAirflowError, match="HTTP 409"):
        _client(server).trigger("d", run_id="taken")
