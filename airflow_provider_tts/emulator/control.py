"""The control API: steer the emulator from another process (for example Airflow workers).

The ``op_*`` functions are the single implementation behind both this HTTP API and the Python
methods of :class:`~airflow_provider_tts.emulator.Emulator`; the HTTP handlers only translate JSON.
No API key is needed and faults never apply here.

    GET  /_emulator/health            {"ok": true, "url": ..., base URLs}
    GET  /_emulator/stats             counters (see Emulator.stats)
    GET  /_emulator/requests?limit=N  recent vendor requests (bounded log)
    GET  /_emulator/storage           storage requests with x-api-key presence/value
    GET  /_emulator/tasks             every task;  GET /_emulator/tasks/{task_id}: one task
    POST /_emulator/tasks             {"api", "kind", "outcome", "delay", "reason", "audio_bytes",
                                       "audio_format", "not_found_for", "text", "duration", variants...}
    POST /_emulator/script            same keys minus text/duration: the next create of api/kind gets it
    POST /_emulator/inject            {"kind", "count": 1, "endpoint": "status", "api": null}
    GET|POST /_emulator/faults        read / replace the FaultConfig
    GET|POST /_emulator/config        read / partially update the EmulatorConfig
    POST /_emulator/reset             forget tasks, scripts, injections, counters; restore start-up faults
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any

from aiohttp import web

from .config import ConfigError, EmulatorConfig, FaultConfig
from .state import State, Task

if TYPE_CHECKING:
    from .server import EmulatorServer

_TASK_EXTRAS = ("api", "kind", "text", "duration")


# -- shared operations -----------------------------------------------------------------------


def op_create_task(state: State, data: Mapping[str, Any], origin: str = "python") -> Task:
    """Create a task directly (no vendor request, not counted as a create)."""
    values = {k: v for k, v in data.items() if k not in _TASK_EXTRAS}
    text = data.get("text")
    if text is not None and not isinstance(text, str):
        raise ConfigError(f"text must be a string; got {text!r}")
    return state.create_task(
        data.get("api"),
        data.get("kind"),
        values,
        text=text,
        duration=data.get("duration"),
        origin=origin,
    )


def op_script(state: State, data: Mapping[str, Any]) -> int:
    """Queue a spec for the next vendor create of (api, kind); returns the queue length."""
    values = {k: v for k, v in data.items() if k not in ("api", "kind")}
    return state.script(data.get("api"), data.get("kind"), values)


def op_inject(state: State, data: Mapping[str, Any]) -> None:
    unknown = set(data) - {"kind", "count", "endpoint", "api"}
    if unknown:
        raise ConfigError(f"unknown inject setting(s): {', '.join(sorted(unknown))}")
    state.inject(
        data.get("kind"),
        data.get("count", 1),
        data.get("endpoint", "status"),
        data.get("api"),
    )


def op_set_faults(state: State, faults: FaultConfig | Mapping[str, Any]) -> FaultConfig:
    if not isinstance(faults, FaultConfig):
        faults = FaultConfig.from_mapping(faults)
    return state.set_faults(faults)


def op_configure(state: State, changes: Mapping[str, Any]) -> EmulatorConfig:
    return state.configure(state.config.updated_from_mapping(changes))


# -- HTTP ------------------------------------------------------------------------------------


def _json(payload: object, status: int = 200) -> web.Response:
    return web.Response(status=status, text=json.dumps(payload), content_type="application/json")


async def _body(request: web.Request) -> dict[str, Any]:
    raw = await request.read()
    if not raw.strip():
        return {}
    try:
        data = json.loads(raw)
    except ValueError as exc:
        raise ConfigError(f"body is not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError("body must be a JSON object")
    return data


def add_control_routes(app: web.Application, server: EmulatorServer) -> None:
    state = server.state

    def route(
        handler: Callable[[web.Request], Awaitable[web.Response]],
    ) -> Callable[[web.Request], Awaitable[web.Response]]:
        async def wrapped(request: web.Request) -> web.Response:
            state.count_control()
            try:
                return await handler(request)
            except (ConfigError, TypeError) as exc:
                return _json({"error": str(exc)}, 400)

        return wrapped

    async def health(request: web.Request) -> web.Response:
        return _json(
            {
                "ok": True,
                "url": server.url,
                "camb_base_url": f"{server.url}/apis",
                "revid_base_url": f"{server.url}/paid",
                "revid_status_base_url": f"{server.url}/api",
                "audio_base_url": server.audio_base_url,
            }
        )

    async def stats(request: web.Request) -> web.Response:
        return _json(server.stats())

    async def requests_log(request: web.Request) -> web.Response:
        raw = request.query.get("limit")
        if raw is not None and not raw.isdigit():
            raise ConfigError("limit must be a non-negative integer")
        return _json(state.request_log(int(raw) if raw is not None else None))

    async def storage(request: web.Request) -> web.Response:
        return _json(state.storage_log())

    async def list_tasks(request: web.Request) -> web.Response:
        config = state.config
        return _json([task.info(config) for task in state.tasks()])

    async def get_task(request: web.Request) -> web.Response:
        task = state.task(request.match_info["task_id"])
        if task is None:
            return _json({"error": "no such task"}, 404)
        return _json(task.info(state.config))

    async def create_task(request: web.Request) -> web.Response:
        task = op_create_task(state, await _body(request), origin="control")
        server.prefetch_soon(task)
        return _json({"task_id": task.task_id, "api": task.api, "kind": task.kind, "run_id": task.run_id})

    async def script(request: web.Request) -> web.Response:
        return _json({"queued": op_script(state, await _body(request))})

    async def inject(request: web.Request) -> web.Response:
        op_inject(state, await _body(request))
        return _json({"pending_injections": state.stats()["pending_injections"]})

    async def get_faults(request: web.Request) -> web.Response:
        return _json(state.config.faults.to_dict())

    async def set_faults(request: web.Request) -> web.Response:
        return _json(op_set_faults(state, await _body(request)).to_dict())

    async def get_config(request: web.Request) -> web.Response:
        return _json(state.config.to_dict())

    async def set_config(request: web.Request) -> web.Response:
        return _json(op_configure(state, await _body(request)).to_dict())

    async def reset(request: web.Request) -> web.Response:
        state.reset()
        return _json({"ok": True})

    r = app.router
    r.add_get("/_emulator/health", route(health))
    r.add_get("/_emulator/stats", route(stats))
    r.add_get("/_emulator/requests", route(requests_log))
    r.add_get("/_emulator/storage", route(storage))
    r.add_get("/_emulator/tasks", route(list_tasks))
    r.add_post("/_emulator/tasks", route(create_task))
    r.add_get("/_emulator/tasks/{task_id}", route(get_task))
    r.add_post("/_emulator/script", route(script))
    r.add_post("/_emulator/inject", route(inject))
    r.add_get("/_emulator/faults", route(get_faults))
    r.add_post("/_emulator/faults", route(set_faults))
    r.add_get("/_emulator/config", route(get_config))
    r.add_post("/_emulator/config", route(set_config))
    r.add_post("/_emulator/reset", route(reset))
