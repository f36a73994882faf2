"""The Redis resource against real redis-server processes: embedded, URL and password."""

import pytest
import redis

from fs_resources.embedded_redis import EmbeddedRedis, redact
from fs_resources.redis_store import RedisResource

pytestmark = pytest.mark.integration


def test_resource_talks_to_a_real_server(redis_server):
    client = RedisResource(url=redis_server).client()
    client.set("fs:test", b"1")
    assert client.get("fs:test") == b"1"
    assert client.info("server")["redis_version"]


def test_embedded_server_is_started_when_no_url_is_set(data_root, monkeypatch):
    monkeypatch.delenv("REDIS_URL", raising=False)
    resource = RedisResource()
    try:
        assert resource.client().ping()
        assert EmbeddedRedis().is_running()
        # a second user attaches to the same server instead of starting another
        assert RedisResource().resolved_url() == resource.resolved_url()
    finally:
        EmbeddedRedis().stop()
    assert not EmbeddedRedis().is_running()


def test_password_is_used_but_never_shown(tmp_path):
    server = EmbeddedRedis(tmp_path / "auth", password="s3cret-pw")
    url = server.start()
    try:
        resource = RedisResource(url=url)
        assert resource.client().ping()
        assert "s3cret-pw" not in resource.redacted_url() and "***" in resource.redacted_url()
        try:
            redis.Redis.from_url(url.replace("s3cret-pw", "wrong")).ping()
            raise AssertionError("a wrong password was accepted")
        except redis.AuthenticationError:
            pass
    finally:
        server.stop()
    assert redact("redis://127.0.0.1:6379/0") == "redis://127.0.0.1:6379/0"
