"""When the daily monitoring assets are requested: after their day's features change, not after a
registry update or a promotion (which would re-request every day ever scored)."""

import dagster as dg
import pytest

from fs_assets.features.assets import device_features_1d, device_features_1h
from fs_assets.ingest.assets import device_registry
from fs_assets.monitoring.assets import anomaly_scores, feature_drift_report
from fs_assets.training.assets import promoted_reference
from fs_domain.models import MODEL_NAMES

pytestmark = pytest.mark.unit

DAY = "2026-01-06"
MONITORING = {anomaly_scores.key, feature_drift_report.key}
# Resources are only named, never used: evaluating conditions and creating a run run nothing.
NAMED_ONLY = {key: dg.ResourceDefinition.none_resource() for key in ("delta", "feature_store", "spark")}


def _materialized(instance, asset, partition=None) -> None:
    instance.report_runless_asset_event(dg.AssetMaterialization(asset_key=asset.key, partition=partition))


def _requested(instance, cursor):
    assets = [device_features_1h, device_features_1d, device_registry, promoted_reference, anomaly_scores, feature_drift_report]
    result = dg.evaluate_automation_conditions(
        defs=dg.Definitions(assets=assets, resources=NAMED_ONLY),
        instance=instance,
        cursor=cursor,
    )
    requested = {(key, partition) for key in MONITORING for partition in result.get_requested_partitions(key)}
    return requested, result.cursor


def _day_scored_once_references_exist(instance):
    """The day's features, every model's promoted reference and the registry materialized; the cursor before them."""
    _, cursor = _requested(instance, None)
    for features in (device_features_1h, device_features_1d):
        _materialized(instance, features, DAY)
    for model in MODEL_NAMES:
        _materialized(instance, promoted_reference, model)
    _materialized(instance, device_registry)
    return cursor


def test_monitoring_follows_its_days_features_not_registry_updates_or_promotions():
    with dg.instance_for_test() as instance:
        cursor = _day_scored_once_references_exist(instance)
        requested, cursor = _requested(instance, cursor)
        assert requested == {(key, DAY) for key in MONITORING}
        for key in MONITORING:
            instance.report_runless_asset_event(dg.AssetMaterialization(asset_key=key, partition=DAY))
        requested, cursor = _requested(instance, cursor)
        assert requested == set()
        # A registry update and a new promotion are read by the next run; they request nothing.
        _materialized(instance, device_registry)
        _materialized(instance, promoted_reference, MODEL_NAMES[0])
        requested, cursor = _requested(instance, cursor)
        assert requested == set()
        # Late data: the day's features change, and its scores and drift report follow.
        _materialized(instance, device_features_1d, DAY)
        requested, cursor = _requested(instance, cursor)
        assert requested == {(key, DAY) for key in MONITORING}


def test_monitoring_is_requested_while_its_days_features_are_being_computed_again():
    """On a live store the day's features are recomputed run after run: scores that waited for a
    moment with no features run in progress would wait for hours, and a drifting sensor with them."""
    with dg.instance_for_test() as instance:
        cursor = _day_scored_once_references_exist(instance)
        # The next features run of the day has started (planned, not finished).
        job = dg.Definitions(assets=[device_features_1h], resources=NAMED_ONLY).resolve_implicit_global_asset_job_def()
        run = instance.create_run_for_job(job, asset_selection=frozenset({device_features_1h.key}), tags={"dagster/partition": DAY})
        assert instance.get_run_by_id(run.run_id).status == dg.DagsterRunStatus.NOT_STARTED
        requested, cursor = _requested(instance, cursor)
        assert requested == {(key, DAY) for key in MONITORING}
