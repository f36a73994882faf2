"""Shared fixtures: one Spark session, one real Redis server and a fresh data root per test."""

import os
import sys
from datetime import date
from pathlib import Path

import dagster as dg
import pytest

from fs_resources.delta import DeltaTables
from fs_resources.redis_store import EmbeddedRedis, RedisResource
from fs_resources.spark import DeltaSparkResource, delta_spark_conf, get_spark_session

# One calendar for the simulated fleet in tests: recent enough to sit inside the partitions.
SIM_START = date(2026, 1, 5)


@pytest.fixture(scope="session")
def spark():
    os.environ["PYSPARK_PYTHON"] = sys.executable
    conf = delta_spark_conf(master="local[2]", shuffle_partitions=2, driver_memory="2g")
    session = get_spark_session(conf)
    yield session
    session.stop()


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory):
    """A real redis-server on a free loopback port, for the whole test session."""
    server = EmbeddedRedis(tmp_path_factory.mktemp("redis"))
    url = server.start()
    yield url
    server.stop()


@pytest.fixture
def data_root(tmp_path, monkeypatch) -> Path:
    root = tmp_path / "data"
    root.mkdir()
    monkeypatch.setenv("FS_DATA_ROOT", str(root))
    return root


@pytest.fixture
def resources(spark, data_root, redis_server):
    return {"spark": DeltaSparkResource(), "delta": DeltaTables(), "redis": RedisResource(url=redis_server)}


@pytest.fixture
def instance():
    with dg.instance_for_test() as inst:
        yield inst
