"""The Redis resource against real redis-server processes: embedded, URL and password; only the
writer starts the embedded server, a check finds it as it is."""

import dagster as dg
import pytest
import redis

from fs_assets.ontology.assets import ontology_assets
from fs_checks.online_checks import CHECK_LAG, REFILL_NEEDED, online_checks
from fs_resources.delta import DeltaTables
from fs_resources.embedded_redis import EmbeddedRedis, redact
from fs_resources.feature_store import FeatureStoreResource
from fs_resources.redis_store import RedisResource
from fs_resources.spark import DeltaSparkResource
from fs_sensors.online_store_schedules import online_store_refill_sensor, online_store_watch_job

pytestmark = pytest.mark.integration


def test_resource_talks_to_a_real_server(redis_server):
    client = RedisResource(url=redis_server).client()
    client.set("fs:test", b"1")
    assert client.get("fs:test") == b"1"
    assert client.info("server")["redis_version"]


def test_the_writer_starts_the_embedded_server_when_no_url_is_set(data_root, monkeypatch):
    monkeypatch.delenv("REDIS_URL", raising=False)
    resource = RedisResource()
    try:
        assert resource.writable_online_store("v1").client.ping()
        assert EmbeddedRedis().is_running()
        assert resource.client().ping()
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


def _watch(instance):
    """The 15-minute watch (the lag check alone) as the daemon runs it, on the embedded server, and
    what the refill sensor makes of it."""
    spark = DeltaSparkResource()
    defs = dg.Definitions(
        assets=ontology_assets,
        asset_checks=online_checks,
        jobs=[online_store_watch_job],
        resources={"spark": spark, "delta": DeltaTables(spark=spark), "feature_store": FeatureStoreResource(), "redis": RedisResource()},
    )
    result = defs.resolve_job_def("online_store_watch_job").execute_in_process(instance=instance)
    (evaluation,) = result.get_asset_check_evaluations()
    context = dg.build_run_status_sensor_context(
        sensor_name="online_store_refill_sensor",
        dagster_instance=instance,
        dagster_run=result.dagster_run,
        dagster_event=result.get_run_success_event(),
    )
    return evaluation, online_store_refill_sensor(context)


def test_the_lag_check_reports_a_stopped_embedded_redis_down_and_leaves_it_down(data_root, monkeypatch):
    monkeypatch.delenv("REDIS_URL", raising=False)
    server = EmbeddedRedis()
    # Never started: describing the server starts nothing either.
    assert "never started" in RedisResource().redacted_url() and not server.port_file.exists()
    server.start()
    password = server.password
    server.stop()
    try:
        assert not server.is_running()
        with dg.instance_for_test() as instance:
            instance.report_runless_asset_event(dg.AssetMaterialization(asset_key="device_features_1d", partition="2026-01-05"))
            evaluation, refill = _watch(instance)
        assert evaluation.check_name == CHECK_LAG and not evaluation.passed
        assert evaluation.severity == dg.AssetCheckSeverity.ERROR
        assert evaluation.metadata["observed"].value == "unreachable" and evaluation.metadata["threshold"].value == "reachable"
        assert "does not answer" in evaluation.description and password not in evaluation.description
        assert evaluation.metadata[REFILL_NEEDED].value is False and isinstance(refill, dg.SkipReason)
        # What the check called left the server as it found it.
        assert RedisResource().unreachable() is not None and RedisResource().redacted_url().endswith(f"{server.port_file.read_text()}/0")
        assert not server.is_running()
    finally:
        server.stop()
