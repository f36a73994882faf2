"""The online store's Redis as a Dagster resource: a URL, or the embedded server (`embedded_redis`).

The resource owns one client for the run (created on first use, closed when the run ends), so
every step and check of a run shares its connection pool.

Only a writer starts the embedded server (`writable_online_store`, pre-hydration). Everything a
check calls to read, probe or describe (`online_store`, `client`, `unreachable`, `redacted_url`)
takes the server as it is: a check that started what it checks would revive a dead server and
report it healthy instead of down.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

import dagster as dg
import redis
from pydantic import Field, PrivateAttr

from fs_resources.embedded_redis import EmbeddedRedis, RedisUnavailable, redact
from fs_resources.online import OnlineStore


class RedisResource(dg.ConfigurableResource):
    """The online store's Redis; unset `url` reads REDIS_URL, else the embedded server (which only pre-hydration starts)."""

    url: str | None = Field(default=None, description="redis:// URL (may carry a password); unset reads REDIS_URL.")
    socket_timeout: float = Field(default=2.0, description="Seconds before a Redis call gives up.")
    ttl_seconds: int | None = Field(
        default=None, description="Lifetime of a device entry; unset reads FS_ONLINE_TTL_SECONDS, else 7200 (2 h)."
    )
    write_retries: int = Field(default=3, description="Retries of a failed round trip while pre-hydrating (backoff doubles from 0.5 s).")

    _client: redis.Redis | None = PrivateAttr(default=None)
    _client_url: str | None = PrivateAttr(default=None)

    def teardown_after_execution(self, context: dg.InitResourceContext) -> None:
        self.close()

    def _configured_url(self) -> str | None:
        return self.url or os.environ.get("REDIS_URL") or None

    def resolved_url(self) -> str:
        """The server's URL, starting nothing: the configured one, else where the embedded server
        runs or last ran (RedisUnavailable when it never started)."""
        url = self._configured_url() or EmbeddedRedis().url()
        if url is None:
            raise RedisUnavailable(
                f"REDIS_URL is unset and the embedded redis-server under {EmbeddedRedis().directory} has never been started "
                "(pre-hydration starts it)"
            )
        return url

    def started_url(self) -> str:
        """The server's URL, the embedded server started first when it is down: for writers only."""
        return self._configured_url() or EmbeddedRedis().start()

    def redacted_url(self) -> str:
        """What may be shown of the server's address (password replaced); never starts a server."""
        url = self._configured_url() or EmbeddedRedis().url()
        return redact(url) if url else f"embedded redis-server under {EmbeddedRedis().directory} (never started)"

    def unreachable(self) -> str | None:
        """None when the server answers a PING, else why not; starts nothing."""
        try:
            self.client().ping()
        except (RedisUnavailable, redis.ConnectionError, redis.TimeoutError, redis.AuthenticationError) as exc:
            return f"Redis at {self.redacted_url()} does not answer: {type(exc).__name__}: {exc}"
        return None

    def resolved_ttl_seconds(self) -> int:
        ttl = self.ttl_seconds or int(os.environ.get("FS_ONLINE_TTL_SECONDS") or 7200)
        if ttl <= 0:
            raise ValueError(f"the online TTL must be positive seconds, got {ttl}")
        return ttl

    def online_store(self, feature_set_version: str, model_versions: Mapping[str, str] | None = None) -> OnlineStore:
        """The `OnlineStore` of a feature set version (and of models pinned elsewhere) on this Redis
        as it is (nothing started), for readers."""
        return OnlineStore(self.client(), feature_set_version, model_versions)

    def writable_online_store(self, feature_set_version: str, model_versions: Mapping[str, str] | None = None) -> OnlineStore:
        """The `OnlineStore` to project into: the embedded server is started if it is down."""
        return OnlineStore(self._client_for(self.started_url()), feature_set_version, model_versions)

    def client(self) -> redis.Redis:
        """The resource's client of the server as it is (nothing started)."""
        return self._client_for(self.resolved_url())

    def _client_for(self, url: str) -> redis.Redis:
        """The resource's client; a new one only when the server's URL changed (an embedded restart)."""
        if self._client is None or url != self._client_url:
            self.close()
            self._client = redis.Redis.from_url(
                url, socket_timeout=self.socket_timeout, socket_connect_timeout=self.socket_timeout, decode_responses=False
            )
            self._client_url = url
        return self._client

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
        self._client, self._client_url = None, None
