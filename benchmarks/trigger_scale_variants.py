"""The same wait as :class:`TtsTaskTrigger`, with the other HTTP session strategies, for the benchmark only.

``benchmarks/trigger_scale.py`` compares three ways of holding HTTP sessions while thousands of
triggers poll in one event loop. Only the session handling differs; the wait loop, the hook, the
vendor unit, the retry policy and the session settings are the provider's own code, unchanged:

* ``shared`` -- :class:`TtsTaskTrigger` as shipped: every trigger takes its session from the pool
  shared per (event loop, connection identity) (``TtsHook(shared_session=True)``, the default);
* ``per-trigger`` -- one keep-alive API client per trigger, kept across its polls
  (``TtsHook(shared_session=False)``);
* ``per-poll`` -- the http provider's ``HttpSensorTrigger`` pattern: a new ``ClientSession`` (and so a
  new TCP connection) opened and closed around every request.
"""

from __future__ import annotations

from typing import Any

from airflow_provider_tts.hooks.tts import TtsHook
from airflow_provider_tts.transport import AsyncTransport, new_client_session
from airflow_provider_tts.triggers.tts import TtsTaskTrigger
from airflow_provider_tts.vendors.base import ApiRequest, ApiResponse


class SessionPerTriggerTrigger(TtsTaskTrigger):
    """One session per trigger: the hook owns its session instead of taking the shared pool's."""

    def _hook(self) -> Any:
        return TtsHook(tts_conn_id=self.tts_conn_id, request_retry=self.request_retry, shared_session=False)


class _SessionPerRequestTransport(AsyncTransport):
    """Opens a fresh aiohttp session (same settings as the provider's) for each API request and closes it after."""

    async def _api_hop(self, req: ApiRequest, url: str, hop: int) -> ApiResponse | str:
        session = new_client_session(self.settings)
        try:
            return await self._aiohttp_hop(session, req, url, hop)
        finally:
            await session.close()


class _SessionPerPollHook(TtsHook):
    async def _async(self) -> AsyncTransport:
        if self._async_transport is None:
            self._async_transport = _SessionPerRequestTransport((await self.avendor()).settings, shared=False)
        return self._async_transport


class SessionPerPollTrigger(TtsTaskTrigger):
    """The http provider's pattern: a new ``aiohttp.ClientSession`` around every poll."""

    def _hook(self) -> Any:
        return _SessionPerPollHook(tts_conn_id=self.tts_conn_id, request_retry=self.request_retry)


#: Strategy name -> trigger class, in the order the report shows them.
STRATEGIES: dict[str, type[TtsTaskTrigger]] = {
    "shared": TtsTaskTrigger,
    "per-trigger": SessionPerTriggerTrigger,
    "per-poll": SessionPerPollTrigger,
}

#: How the report names each strategy.
LABELS = {
    "shared": "shared pool per (loop, connection) — default",
    "per-trigger": "one session per trigger",
    "per-poll": "(a) new session per poll (http provider)",
}
