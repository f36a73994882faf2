"""The embedded Redis server: its password, its port and its data survive a restart."""

import stat

import pytest
import redis

from fs_resources.embedded_redis import EmbeddedRedis

pytestmark = pytest.mark.integration


def test_a_generated_password_kept_beside_the_data_and_only_the_owner_reads_it(tmp_path):
    server = EmbeddedRedis(tmp_path / "redis")
    url = server.start()
    try:
        assert stat.S_IMODE(server.password_file.stat().st_mode) == 0o600
        assert stat.S_IMODE(server.directory.stat().st_mode) == 0o700
        assert server.password and server.password in url
        with pytest.raises(redis.AuthenticationError):
            redis.Redis.from_url(url.replace(server.password, "wrong")).ping()
        with pytest.raises((redis.AuthenticationError, redis.ResponseError)):
            redis.Redis(host="127.0.0.1", port=int(server.port_file.read_text())).get("x")
        # Another handle on the same folder finds the same server.
        assert EmbeddedRedis(tmp_path / "redis").url() == url and EmbeddedRedis(tmp_path / "redis").is_running()
    finally:
        server.stop()


def test_a_restart_comes_back_on_its_port_with_its_data(tmp_path):
    server = EmbeddedRedis(tmp_path / "redis")
    url = server.start()
    try:
        redis.Redis.from_url(url).set("fs:v1:device:dev-1", b"kept")
        server.stop()
        assert not server.is_running()
        assert EmbeddedRedis(tmp_path / "redis").start() == url
        assert redis.Redis.from_url(url).get("fs:v1:device:dev-1") == b"kept"
    finally:
        server.stop()
