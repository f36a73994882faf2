"""Shared fixtures: one Spark session, one real Redis server, a fresh data root per test, one
ingested simulated fleet per session; the test tiers (unit, integration, e2e) and a bounded wait."""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path

import dagster as dg
import pytest

from fs_resources import settings
from fs_resources.delta import DeltaTables
from fs_resources.embedded_redis import EmbeddedRedis
from fs_resources.redis_store import RedisResource
from fs_resources.spark import DeltaSparkResource, delta_spark_conf, get_spark_session

# One calendar for the simulated fleet in tests: recent enough to sit inside the partitions.
SIM_START = date(2026, 1, 5)

# Test tables hold a few thousand rows: compiling generated code for each new query costs more
# than it saves (about 15 % of an ingest test's time), and Spark's interpreted evaluation returns
# the same results. For the same reason the JVMs compile only with their quick compiler (C1) and
# collect garbage in one thread: a test's JVM lives a few minutes and runs each query a few times,
# and optimizing compiles and parallel collection took the cores the tests wait on (a cold Spark
# and Delta workload ran in about half the time). The quick compiler alone reserves only 48 MB of
# code cache: one test filled it (55,000 compiles, 18 s of its 90 s spent compiling, the sweeper
# throwing code away to compile it again), and 256 MB made an ingest module 10-25 % faster on two
# busy cores. The project's own JVM options are kept. The optimizing compiler does not pay for
# itself even in a worker's session, which lives the whole suite: two ingest modules on two
# workers took 36 % more CPU with it (514 CPU-s against 377).
# Adaptive query execution plans each query again at every shuffle and broadcast and runs each of
# those stages as a Spark job of its own; on tables of a few thousand rows that is all it does.
# Eight small clean runs in one session, alternating: 4-7 % less JVM CPU without it.
# Set in the environment, so the runs tests start as subprocesses (webserver and daemon, killed
# runs, the standalone cluster) do the same; FS_SPARK_CONF set beforehand wins.
SHORT_LIVED_JVM = "-XX:TieredStopAtLevel=1 -XX:ReservedCodeCacheSize=256m -XX:+UseSerialGC"
_PROJECT_CONF = delta_spark_conf(master="local[1]", object_store=False)
os.environ.setdefault(
    "FS_SPARK_CONF",
    json.dumps(
        {
            "spark.sql.codegen.wholeStage": "false",
            "spark.sql.codegen.factoryMode": "NO_CODEGEN",
            "spark.sql.adaptive.enabled": "false",
            **{
                key: f"{_PROJECT_CONF[key]} {SHORT_LIVED_JVM}"
                for key in ("spark.driver.extraJavaOptions", "spark.executor.extraJavaOptions")
            },
        }
    ),
)

TIERS = ("unit", "integration", "e2e")
# Whether the collected tests include one on S3 (it asks for `s3_endpoint`): the shared session then
# starts with Hadoop's S3 connector on its classpath and the endpoint's settings, which Spark takes
# only at session start.
OBJECT_STORE_TESTS = pytest.StashKey[bool]()
# Fixtures that start a Spark session or talk to Redis: a test that uses one is not a unit test.
NOT_UNIT_FIXTURES = ("spark", "redis_server", "resources")


def pytest_collection_modifyitems(config, items):
    """Every test carries exactly one tier marker, and a unit test uses no Spark and no Redis."""
    problems = []
    for item in items:
        tiers = sorted({m.name for m in item.iter_markers() if m.name in TIERS})
        if len(tiers) != 1:
            problems.append(f"{item.nodeid}: tiers {tiers or 'none'}; mark it with exactly one of {', '.join(TIERS)}")
        elif tiers == ["unit"] and (used := [f for f in NOT_UNIT_FIXTURES if f in item.fixturenames]):
            problems.append(f"{item.nodeid}: marked unit but uses {', '.join(used)}; mark it integration")
    if problems:
        raise pytest.UsageError("test tiers:\n  " + "\n  ".join(problems))

    # Modules of the slowest tier first: `make test` hands whole modules to two workers in this
    # order (`--dist loadscope --no-loadscope-reorder`), so the long e2e modules start at once and
    # the quick ones fill in at the end. A module ranks by its slowest test and stays in one piece
    # (its module fixtures are built once); the sort is stable, files keep their order within a tier.
    def tier_rank(item) -> int:
        return TIERS[::-1].index(next((m.name for m in item.iter_markers() if m.name in TIERS), "e2e"))

    module_rank: dict[str, int] = {}
    for item in items:
        module_rank[item.module.__name__] = min(module_rank.get(item.module.__name__, len(TIERS)), tier_rank(item))
    items.sort(key=lambda item: module_rank[item.module.__name__])


def pytest_collection_finish(session):
    session.config.stash[OBJECT_STORE_TESTS] = any("s3_endpoint" in item.fixturenames for item in session.items)


def wait_until(condition: Callable[[], object], timeout: float, what: str, interval: float = 0.01):
    """Poll `condition` until it returns something truthy (and return that), at most `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(interval)


@pytest.fixture(scope="session")
def s3_endpoint(tmp_path_factory):
    """A real S3-compatible endpoint (moto's server) on 127.0.0.1 for the whole session, with its
    address and credentials in the environment the way a deployment sets them (`FS_S3_ENDPOINT`,
    `AWS_ACCESS_KEY_ID`, ...)."""
    from tests.object_store import CREDENTIALS, LocalS3

    server = LocalS3(tmp_path_factory.mktemp("s3") / "moto.log")
    with pytest.MonkeyPatch.context() as patch:
        url = server.start()
        for key, value in {**CREDENTIALS, "FS_S3_ENDPOINT": url}.items():
            patch.setenv(key, value)
        try:
            yield url
        finally:
            server.stop()


@pytest.fixture(scope="session")
def spark(request):
    os.environ["PYSPARK_PYTHON"] = sys.executable
    object_store = request.config.stash.get(OBJECT_STORE_TESTS, False)
    if object_store:
        request.getfixturevalue("s3_endpoint")
    conf = (
        delta_spark_conf(master="local[2]", shuffle_partitions=2, driver_memory="2g", object_store=object_store)
        | settings.spark_conf_overrides()
    )
    session = get_spark_session(conf)
    yield session
    session.stop()


@pytest.fixture(scope="module")
def deployment_planning(spark):
    """Spark plans and runs queries as deployments do, for one module (`pytestmark =
    pytest.mark.usefixtures(...)`): generated code and adaptive execution back on. The session runs
    without them (above), so a fault that only they show needs a module that runs the pipeline the
    deployments' way. Restored for the modules after it."""
    wanted = {"spark.sql.codegen.wholeStage": "true", "spark.sql.codegen.factoryMode": "FALLBACK", "spark.sql.adaptive.enabled": "true"}
    before = {key: spark.conf.get(key) for key in wanted}
    for key, value in wanted.items():
        spark.conf.set(key, value)
    plan = spark.range(3).selectExpr("id + 1 AS x")._jdf.queryExecution().executedPlan().toString()
    assert "*(" in plan, f"whole-stage code generation did not turn on:\n{plan}"
    adaptive = spark.range(3).groupBy("id").count()._jdf.queryExecution().executedPlan().toString()
    assert "AdaptiveSparkPlan" in adaptive, f"adaptive execution did not turn on:\n{adaptive}"
    try:
        yield
    finally:
        for key, value in before.items():
            spark.conf.set(key, value)


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory):
    """A real redis-server on a free loopback port, for the whole test session."""
    server = EmbeddedRedis(tmp_path_factory.mktemp("redis"))
    url = server.start()
    yield url
    server.stop()


@contextmanager
def own_database(redis_url: str, number: int) -> Iterator[str]:
    """A database of its own on the session's Redis server (`number`, one per module that flushes),
    empty before and after: flushing it leaves other modules' entries alone."""
    import redis

    url = redis_url.rsplit("/", 1)[0] + f"/{number}"
    redis.Redis.from_url(url).flushdb()
    try:
        yield url
    finally:
        redis.Redis.from_url(url).flushdb()


@pytest.fixture
def data_root(tmp_path, monkeypatch) -> Path:
    root = tmp_path / "data"
    root.mkdir()
    monkeypatch.setenv("FS_DATA_ROOT", str(root))
    return root


@pytest.fixture
def resources(spark, data_root, redis_server):
    return {"spark": DeltaSparkResource(), "delta": DeltaTables(spark=DeltaSparkResource()), "redis": RedisResource(url=redis_server)}


@pytest.fixture
def instance():
    with dg.instance_for_test() as inst:
        yield inst


@dataclass(frozen=True)
class IngestedFleet:
    """A simulated landing zone with its registry and clean readings already in Delta (read only)."""

    root: Path
    devices: int
    days: tuple[str, ...]

    def copy_to(self, destination: Path) -> Path:
        """A private copy (landing zone and Delta tables) for a test that writes."""
        shutil.copytree(self.root, destination)
        return destination


@pytest.fixture(scope="session")
def ingested_fleet(spark, tmp_path_factory) -> IngestedFleet:
    """Six clean devices over three days, the registry and the clean readings materialized once per
    session. Tests read it in place or write only to a copy (`copy_to`)."""
    from fs_resources.simulator.fleet import FleetSpec, generate
    from tests.ingest_runs import materialize_clean_range, materialize_registry

    spec = FleetSpec.clean(devices=6, start=SIM_START, days=3, seed=2)
    days = tuple((SIM_START + timedelta(days=i)).isoformat() for i in range(spec.days))
    root = tmp_path_factory.mktemp("ingested_fleet") / "data"
    with pytest.MonkeyPatch.context() as patch, dg.instance_for_test() as instance:
        patch.setenv("FS_DATA_ROOT", str(root))
        generate(spec, str(root))
        resources = {"spark": DeltaSparkResource(), "delta": DeltaTables(spark=DeltaSparkResource())}
        materialize_registry(resources, instance)
        assert materialize_clean_range(resources, instance, days[0], days[-1]).success
    return IngestedFleet(root, spec.devices, days)
