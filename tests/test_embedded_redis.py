"""The embedded Redis server: its password, its port and its data survive a restart."""

import stat
import time

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


def test_a_redis_restart_mid_prehydration_is_retried_and_the_projection_completes(tmp_path):
    import threading

    from fs_resources.online import OnlineStore
    from tests.test_online_reads import HYDRATED_AT, _objects

    server = EmbeddedRedis(tmp_path / "redis")
    url = server.start()
    ids = [f"dev-{i:04d}" for i in range(2000)]
    restarted = []

    def restart_after_first_batch(done: int, total: int) -> None:
        if not restarted:  # down now, back in a second: the next round trip meets a closed socket
            server.stop()
            threading.Timer(1.0, lambda: restarted.append(server.start())).start()
            restarted.append(done)

    try:
        store = OnlineStore(redis.Redis.from_url(url), "v1")
        report = store.project(
            _objects(ids), HYDRATED_AT, ttl_seconds=600, batch_size=250, batches_per_round_trip=1,
            retries=5, backoff_seconds=0.5, on_batch=restart_after_first_batch,
        )  # fmt: skip
        assert restarted == [250, url] and report.retries >= 1
        assert report.written == len(ids) and not report.superseded
        rows = store.get_online_features(ids)
        assert all(rows) and store.projection_state().live_devices == len(ids)
    finally:
        time.sleep(1.2)
        server.stop()
