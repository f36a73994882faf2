"""An online store found empty or expired by the 15-minute watch is pre-hydrated at once."""

from datetime import UTC, datetime, timedelta

import dagster as dg
import pytest
import redis

from fs_assets.ontology.assets import ontology_assets
from fs_checks import online_checks as online_checks_module
from fs_checks.online_checks import CHECK_LAG, REFILL_NEEDED, online_checks
from fs_resources.delta import DeltaTables
from fs_resources.feature_store import FeatureStoreResource
from fs_resources.online import OnlineStore, encode_timestamp
from fs_resources.redis_store import RedisResource
from fs_resources.spark import DeltaSparkResource
from fs_sensors.online_store_schedules import online_store_refill_sensor, online_store_watch_job
from tests.conftest import own_database

pytestmark = pytest.mark.integration


@pytest.fixture
def empty_redis(redis_server):
    with own_database(redis_server, 6) as url:
        yield url


def _watch(url: str, instance):
    spark = DeltaSparkResource()
    defs = dg.Definitions(
        assets=ontology_assets,
        asset_checks=online_checks,
        jobs=[online_store_watch_job],
        resources={
            "spark": spark,
            "delta": DeltaTables(spark=spark),
            "feature_store": FeatureStoreResource(),
            "redis": RedisResource(url=url, ttl_seconds=7200),
        },
    )
    result = defs.resolve_job_def("online_store_watch_job").execute_in_process(instance=instance)
    (evaluation,) = result.get_asset_check_evaluations()
    assert evaluation.check_name == CHECK_LAG
    context = dg.build_run_status_sensor_context(
        sensor_name="online_store_refill_sensor",
        dagster_instance=instance,
        dagster_run=result.dagster_run,
        dagster_event=result.get_run_success_event(),
    )
    return evaluation, online_store_refill_sensor(context)


def _features_computed(instance) -> None:
    instance.report_runless_asset_event(dg.AssetMaterialization(asset_key="device_features_1d", partition="2026-01-05"))


def test_an_empty_store_found_by_the_watch_requests_a_prehydration_and_pages_once_owed_past_the_alert(empty_redis, monkeypatch):
    with dg.instance_for_test() as instance:
        # Features written minutes ago, nothing projected yet (a fresh store): a refill, no page.
        _features_computed(instance)
        evaluation, request = _watch(empty_redis, instance)
        assert evaluation.passed and evaluation.metadata[REFILL_NEEDED].value is True
        assert isinstance(request, dg.RunRequest)
        # A projection owed for longer than the lag's alert: it fails, saying for how long.
        first_features = online_checks_module._projection_owed_since(instance)
        assert abs((datetime.now(UTC) - first_features).total_seconds()) < 300
        monkeypatch.setattr(online_checks_module, "_projection_owed_since", lambda _: datetime.now(UTC) - timedelta(hours=2))
        evaluation, request = _watch(empty_redis, instance)
        assert not evaluation.passed and evaluation.metadata[REFILL_NEEDED].value is True
        assert evaluation.metadata["observed"].value >= 119 and evaluation.metadata["threshold"].value == 90


def test_before_any_features_an_empty_store_neither_fails_nor_is_refilled(empty_redis):
    # A fresh instance: a refill would only fail on the missing features table and page.
    with dg.instance_for_test() as instance:
        evaluation, request = _watch(empty_redis, instance)
        # Nothing to project yet is not a failure: the check passes and asks for no refill.
        assert evaluation.passed and evaluation.metadata[REFILL_NEEDED].value is False
        assert isinstance(request, dg.SkipReason)


def test_expired_entries_request_a_prehydration_and_a_live_store_does_not(empty_redis):
    store = OnlineStore(redis.Redis.from_url(empty_redis), "v1")
    with dg.instance_for_test() as instance:
        _features_computed(instance)
        # A projection three hours old whose entries (TTL two hours) are gone.
        store.client.hset(
            store.projection_key, mapping={"hydrated_at": encode_timestamp(datetime.now(UTC) - timedelta(hours=3)), "live_devices": 5}
        )
        evaluation, request = _watch(empty_redis, instance)
        assert evaluation.metadata[REFILL_NEEDED].value is True and isinstance(request, dg.RunRequest)
        # A fresh projection with live entries: nothing to do.
        store.client.hset(store.projection_key, mapping={"hydrated_at": encode_timestamp(datetime.now(UTC)), "live_devices": 1})
        store.client.hset(store.prefix + "dev-1", "hydrated_at", "x")
        evaluation, request = _watch(empty_redis, instance)
        assert evaluation.passed and evaluation.metadata[REFILL_NEEDED].value is False
        assert isinstance(request, dg.SkipReason)
