"""The hub's authentication as the monitor uses it: `MonitorHubOAuth`, the `HubOAuth` singleton
that the handlers (handlers/base.py) ask who a token or cookie belongs to."""

from __future__ import annotations

import time

from jupyterhub.services.auth import HubOAuth


class MonitorHubOAuth(HubOAuth):
    """HubOAuth that forgets a failed token check after NEGATIVE_CACHE_SECONDS.

    HubOAuth caches the hub's answer for a token, a refusal included, for `cache_max_age`. When
    the hub cannot look a token up (its database restarting), it refuses it like an unknown one;
    cached, that refusal would lock a valid token out for minutes after the hub is back. Known
    tokens stay cached for `cache_max_age` (people keep working through a short hub outage);
    refusals are remembered only briefly (so bogus tokens cannot make the monitor ask the hub
    on every request). Relies on `_check_hub_authorization` of jupyterhub 6.1 (pinned).
    """

    NEGATIVE_CACHE_SECONDS = 5.0

    async def _check_hub_authorization(self, url, api_token, cache_key=None, use_cache=True):  # type: ignore[no-untyped-def]
        refused = getattr(self, "_refused", None)
        if refused is None:
            refused = self._refused = {}
        if use_cache and cache_key is not None and time.monotonic() - refused.get(cache_key, -1e9) < self.NEGATIVE_CACHE_SECONDS:
            return None
        data = await super()._check_hub_authorization(url, api_token, cache_key, use_cache)
        if data is None and use_cache and cache_key is not None:
            self.cache.pop(cache_key, None)
            if len(refused) > 10_000:
                refused.clear()
            refused[cache_key] = time.monotonic()
        return data
