"""The online store's Redis as a Dagster resource: a URL, or the embedded server (`embedded_redis`).

The resource owns one client for the run (created on first use, closed when the run ends), so
every step and check of a run shares its connection pool.
"""

from __future__ import annotations

import os

import dagster as dg
import redis
from pydantic import Field, PrivateAttr

from fs_resources.embedded_redis import EmbeddedRedis, redact
from fs_resources.online import OnlineStore


class RedisResource(dg.ConfigurableResource):
    """The online store's Redis; unset `url` reads REDIS_URL, else starts the embedded server."""

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

    def resolved_url(self) -> str:
        url = self.url or os.environ.get("REDIS_URL")
        if url:
            return url
        return EmbeddedRedis().start()

    def redacted_url(self) -> str:
        return redact(self.resolved_url())

    def resolved_ttl_seconds(self) -> int:
        ttl = self.ttl_seconds or int(os.environ.get("FS_ONLINE_TTL_SECONDS") or 7200)
        if ttl <= 0:
            raise ValueError(f"the online TTL must be positive seconds, got {ttl}")
        return ttl

    def online_store(self, feature_set_version: str) -> OnlineStore:
        """The `OnlineStore` of a feature set version on this Redis, sharing the resource's client."""
        return OnlineStore(self.client(), feature_set_version)

    def client(self) -> redis.Redis:
        """The resource's client; a new one only when the server's URL changed (an embedded restart)."""
        url = self.resolved_url()
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
