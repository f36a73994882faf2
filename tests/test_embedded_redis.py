"""The embedded Redis server: its password, its port and its data survive a restart."""

import os
import signal
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import redis

from fs_resources.embedded_redis import EmbeddedRedis, Liveness, RedisUnavailable, redact
from tests.conftest import wait_until

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


# An append-only file of tens of MB, and a pause per key the server replays (at least 50 µs) so its
# load lasts seconds however fast the machine: long enough to start servers into it.
FILLED_KEYS = 40_000
SLOW_LOAD = {"key-load-delay": "50"}


def _servers_working_in(directory: Path) -> list[int]:
    """Pids of the redis-server processes whose data folder is `directory` (redis-server changes into it)."""
    found = []
    for process in Path("/proc").iterdir():
        try:
            if (process / "comm").read_text().startswith("redis-server") and (process / "cwd").resolve(strict=True) == directory.resolve():
                found.append(int(process.name))
        except (OSError, ValueError):
            continue
    return found


def test_a_start_while_the_server_loads_its_append_only_file_waits_for_it_and_starts_no_second(tmp_path):
    directory = tmp_path / "data" / "redis"
    server = EmbeddedRedis(directory, config=SLOW_LOAD)
    url = server.start()
    try:
        client = redis.Redis.from_url(url)
        fill = "for i = tonumber(ARGV[1]), tonumber(ARGV[2]) do redis.call('SET', 'fill:' .. i, ARGV[3]) end"
        for first in range(0, FILLED_KEYS, 10_000):
            client.eval(fill, 0, first, first + 9_999, "v" * 1000)
        client.set("fs:v1:device:dev-1", b"kept")
        server.stop()
        assert server.probe() is Liveness.DOWN
        port_file = (server.port_file.read_text(), server.port_file.stat().st_mtime_ns)

        # Restarted, and not waited for: it keeps reading its file back, and answers LOADING meanwhile.
        with pytest.raises(RedisUnavailable, match="is loading"):
            EmbeddedRedis(directory, config=SLOW_LOAD).start(loading_timeout=0)
        assert server.probe() is Liveness.LOADING and server.is_running()

        # Started again while it loads, from another process (as `make run` does) and from a thread.
        other = subprocess.Popen(
            [sys.executable, "-m", "fs_resources.embedded_redis", "start"],
            env=os.environ | {"FS_DATA_ROOT": str(tmp_path / "data")},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        urls: list[str] = []
        thread = threading.Thread(target=lambda: urls.append(EmbeddedRedis(directory).start()))
        thread.start()
        wait_until(lambda: len(_servers_working_in(directory)) > 1 or server.probe() is not Liveness.LOADING, 60, "the load to end")
        out, err = other.communicate(timeout=60)
        thread.join(timeout=60)

        assert other.returncode == 0, err
        assert out.strip() == redact(url) and urls == [url]
        assert len(_servers_working_in(directory)) == 1
        assert (server.port_file.read_text(), server.port_file.stat().st_mtime_ns) == port_file
        client = redis.Redis.from_url(url)
        assert client.get("fs:v1:device:dev-1") == b"kept" and client.dbsize() == FILLED_KEYS + 1
    finally:
        server.stop()
        for pid in _servers_working_in(directory):  # a second server, had one been started
            os.kill(pid, signal.SIGTERM)


def test_starts_racing_on_a_new_folder_start_one_server(tmp_path):
    directory = tmp_path / "redis"
    ready = threading.Barrier(4)
    urls: list[str] = []

    def start() -> None:
        ready.wait()
        urls.append(EmbeddedRedis(directory).start())

    threads = [threading.Thread(target=start) for _ in range(4)]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=30)
        assert len(urls) == 4 and len(set(urls)) == 1
        assert len(_servers_working_in(directory)) == 1
        assert urls[0] == EmbeddedRedis(directory).url() and EmbeddedRedis(directory).probe() is Liveness.UP
    finally:
        EmbeddedRedis(directory).stop()
        for pid in _servers_working_in(directory):  # the others, had more than one been started
            os.kill(pid, signal.SIGTERM)
