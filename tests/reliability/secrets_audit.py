"""Search an Airflow deployment, and the emulator's records, for an API key that must not be there.

``audit_deployment(home, key)`` reads every table of every SQLite database in an Airflow home
(the trigger rows' kwargs, XCom, rendered template fields, task instance notes, serialized DAGs and
all the rest: nothing is skipped because it seems unlikely), zlib- or gzip-compressed values
included, then the raw database files (free pages and journals too), then every other file under
the home: task logs, triggerer and scheduler logs, DAG bundles. ``audit_emulator(emulator, key)``
checks what the emulator recorded: no request to the storage ("audio") host carried the key, and
no URL of any request contained it. ``audit_postgres`` and ``audit_redis`` search the distributed
deployment's servers (``tools/distributed_airflow.py``): every column of every table and a ``pg_dump``,
and every key of the broker with the Celery message bodies decoded. Both return one line per finding,
so ``[]`` means clean.

The key legitimately lives in the connection (the ``connection`` table, if the connection is stored
there rather than in an environment variable) and in the ``x-api-key`` header of requests to the
vendor API, which the emulator does not log. Used by ``tests/slow/test_example_dags.py`` after every
example DAG ran on a real deployment, and unit-tested on a synthetic home in ``test_secrets_audit.py``.
"""

from __future__ import annotations

import base64
import binascii
import gzip
import json
import sqlite3
import zlib
from collections.abc import Iterable
from pathlib import Path
from typing import Any
from urllib.parse import quote

__all__ = ["audit_deployment", "audit_emulator", "audit_postgres", "audit_redis", "needles"]

#: Tables where the key may legitimately be (a connection stored in the metadata DB).
ALLOWED_TABLES = frozenset({"connection"})
_DB_SUFFIXES = (".db", ".sqlite", ".sqlite3")
_DB_COMPANIONS = ("", "-wal", "-journal", "-shm")


def needles(key: str) -> list[bytes]:
    """The spellings of ``key`` worth searching for: as is, URL-quoted, base64 (as in Basic auth)."""
    if not key:
        raise ValueError("an empty key matches everything")
    raw = key.encode()
    found = [raw, quote(key, safe="").encode()]
    for offset in range(3):  # base64 inside a longer encoded value: each of the three alignments
        encoded = base64.b64encode(b"\0" * offset + raw)
        start = 4 if offset else 0  # the first group mixes in bytes before the key
        end = len(encoded) - (4 if (offset + len(raw)) % 3 else 0)  # the last one, bytes after it
        if end - start >= 8:
            found.append(encoded[start:end])
    return list(dict.fromkeys(found))


def _expansions(value: bytes) -> Iterable[bytes]:
    """The value, and what it decompresses to when it is zlib or gzip data (serialized DAGs are)."""
    yield value
    for decompress in (zlib.decompress, gzip.decompress):
        try:
            yield decompress(value)
        except Exception:  # not compressed, or not this compression
            continue


def _hit(value: bytes, keys: list[bytes]) -> bool:
    return any(k in v for v in _expansions(value) for k in keys)


def _as_bytes(value: Any) -> bytes | None:
    if isinstance(value, str):
        return value.encode("utf-8", "surrogatepass")
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value)
    return None


def _audit_db(path: Path, keys: list[bytes], allowed: frozenset[str], summary: dict[str, int]) -> list[str]:
    findings: list[str] = []
    allowed_hits = 0
    with sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True, timeout=60) as db:
        tables = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")]
        for table in tables:
            cursor = db.execute(f'SELECT * FROM "{table}"')  # table names come from sqlite_master
            columns = [c[0] for c in cursor.description]
            summary["tables"] += 1
            for number, row in enumerate(cursor, 1):
                summary["rows"] += 1
                for column, value in zip(columns, row, strict=True):
                    data = _as_bytes(value)
                    if data is None or not _hit(data, keys):
                        continue
                    if table in allowed:
                        allowed_hits += 1
                    else:
                        findings.append(f"{path.name}: table {table}, column {column}, row {number}")
    # Whatever the tables no longer show: deleted rows in free pages, journals, WAL frames.
    for suffix in _DB_COMPANIONS:
        raw = path.with_name(path.name + suffix)
        if raw.exists():
            summary["db_bytes"] += raw.stat().st_size
            if not findings and not allowed_hits and any(k in raw.read_bytes() for k in keys):
                findings.append(f"{raw.name}: raw database bytes (a deleted row, free page or journal)")
    return findings


def audit_deployment(
    home: Path,
    key: str,
    *,
    allowed_tables: Iterable[str] = ALLOWED_TABLES,
    summary: dict[str, int] | None = None,
) -> list[str]:
    """Every place under ``home`` (databases and files) that holds ``key``; ``[]`` when there is none.

    :param summary: if given, filled with what was scanned (``databases``, ``tables``, ``rows``,
        ``db_bytes``, ``files``, ``file_bytes``), so a clean result can be told from an empty scan.
    """
    home = Path(home)
    keys = needles(key)
    stats = summary if summary is not None else {}
    for name in ("databases", "tables", "rows", "db_bytes", "files", "file_bytes"):
        stats.setdefault(name, 0)
    allowed = frozenset(allowed_tables)
    findings: list[str] = []
    databases = sorted(p for p in home.glob("*") if p.is_file() and p.suffix in _DB_SUFFIXES)
    skip = {p.with_name(p.name + s) for p in databases for s in _DB_COMPANIONS}
    for db in databases:
        stats["databases"] += 1
        findings += _audit_db(db, keys, allowed, stats)
    for path in sorted(home.rglob("*")):
        if not path.is_file() or path in skip or path.is_symlink():
            continue
        data = path.read_bytes()
        stats["files"] += 1
        stats["file_bytes"] += len(data)
        if not _hit(data, keys):
            continue
        rel = path.relative_to(home)
        lines = [n for n, line in enumerate(data.splitlines(), 1) if any(k in line for k in keys)]
        where = f"line {lines[0]}" + (f" (+{len(lines) - 1} more)" if len(lines) > 1 else "") if lines else "compressed"
        findings.append(f"{rel}: {where}")
    return findings


def audit_emulator(emulator: Any, key: str) -> list[str]:
    """What the emulator saw that it should not have: the key at the storage host, or in any URL.

    Works with an in-process :class:`~airflow_provider_tts.emulator.Emulator` (``stats()``,
    ``requests()``, ``storage_requests()``). The counters cover every request since the emulator
    started (or was reset); the two logs only the most recent ones (``request_log_size``).
    """
    keys = [k.decode() for k in needles(key)]
    findings: list[str] = []
    stats = emulator.stats()
    if stats["storage_requests_with_api_key"]:
        findings.append(f"emulator: {stats['storage_requests_with_api_key']} storage requests carried an x-api-key")
    if key in stats.get("storage_api_keys_seen", []):
        findings.append("emulator: the storage host received this very key")
    for entry in emulator.storage_requests():
        if entry.get("api_key_present") or entry.get("authorization_present"):
            findings.append(f"emulator: storage request {entry['method']} {entry['path']} carried credentials")
        if any(k in entry["path"] for k in keys):
            findings.append(f"emulator: the key is in the storage URL {entry['path'][:80]}")
    for entry in emulator.requests():
        if any(k in entry["path"] for k in keys):
            findings.append(f"emulator: the key is in the URL of {entry['method']} {entry['endpoint']} request")
    return findings


def audit_postgres(af: Any, key: str, dump: Path) -> tuple[list[str], dict[str, int]]:
    """Where ``key`` is in a :class:`~tools.distributed_airflow.DistributedAirflow`'s metadata DB.

    Reads the ``pg_dump`` written to ``dump`` (bytea columns appear hex-encoded there) and every column
    of every table, compressed values included. Returns the findings and what was scanned.
    """
    keys = needles(key)
    keys_hex = [k.hex().encode() for k in keys]
    findings: list[str] = []
    data = af.pg_dump(dump).read_bytes()
    if any(k in data for k in keys + keys_hex):
        findings.append(f"pg_dump {dump.name}")
    summary = {"tables": 0, "rows": 0, "dump_bytes": len(data)}
    tables = [r[0] for r in af.pg_query("SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY 1")]
    conn = af.pg_connect()
    try:
        with conn, conn.cursor() as cur:
            for table in tables:
                cur.execute(f'SELECT * FROM "{table}"')  # names from pg_tables
                columns = [c.name for c in cur.description]
                summary["tables"] += 1
                for number, row in enumerate(cur, 1):
                    summary["rows"] += 1
                    for column, value in zip(columns, row, strict=True):
                        if value is None:
                            continue
                        if isinstance(value, (bytes, memoryview)):
                            raw = bytes(value)
                        else:
                            raw = (value if isinstance(value, str) else json.dumps(value, default=str)).encode()
                        if _hit(raw, keys):
                            findings.append(f"postgres: table {table}, column {column}, row {number}")
    finally:
        conn.close()
    return findings, summary


def audit_redis(af: Any, key: str) -> tuple[list[str], int]:
    """Where ``key`` is in the broker's keyspace (Celery message bodies base64-decoded); findings, keys scanned."""
    keys = needles(key)
    client = af.redis_client()
    findings: list[str] = []
    count = 0
    for name in client.scan_iter(count=1000):
        count += 1
        kind = client.type(name).decode()
        values: list[bytes] = [name]
        if kind == "string":
            values.append(client.get(name) or b"")
        elif kind == "list":
            values += client.lrange(name, 0, -1)
        elif kind == "hash":
            for field, value in client.hgetall(name).items():
                values += [field, value]
        elif kind == "set":
            values += list(client.smembers(name))
        elif kind == "zset":
            values += [member for member, _ in client.zrange(name, 0, -1, withscores=True)]
        for value in values:
            decoded = [value]
            try:
                body = json.loads(value).get("body")
                if isinstance(body, str):
                    decoded.append(base64.b64decode(body))
            except (ValueError, AttributeError, TypeError, binascii.Error):
                pass
            if any(k in d for d in decoded for k in keys):
                findings.append(f"redis: key {name!r} ({kind})")
    return findings, count
