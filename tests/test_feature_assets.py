"""Feature assets for real: a multi-day range in one run, idempotent re-runs, versions side by side.

The one module whose Spark plans as deployments do: generated code and adaptive execution on (`deployment_planning`)."""

import hashlib
from datetime import timedelta
from pathlib import Path

import dagster as dg
import pytest
from delta.tables import DeltaTable
from pyspark.sql import functions as F

from fs_assets.features.assets import feature_assets
from fs_checks.feature_checks import CHECK_COVERAGE, CHECK_KEY_UNIQUE, CHECK_LOOKS_BACKWARD, build_feature_checks
from fs_domain.features import WINDOWS
from fs_resources.delta import DeltaTables
from fs_resources.feature_store import FeatureStoreResource
from fs_resources.redis_store import RedisResource
from fs_resources.spark import DeltaSparkResource
from tests.conftest import SIM_START

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("deployment_planning")]

DAYS = [(SIM_START + timedelta(days=i)).isoformat() for i in range(3)]
DEVICES = 6
feature_checks = [check for window in WINDOWS for check in build_feature_checks(window)]


def _materialize_range(resources, instance, version="v1"):
    return dg.materialize(
        [*feature_assets, *feature_checks],
        resources={**resources, "feature_store": FeatureStoreResource(feature_set_version=version)},
        instance=instance,
        tags={"dagster/asset_partition_range_start": DAYS[0], "dagster/asset_partition_range_end": DAYS[-1]},
    )


def _rows(spark, version="v1"):
    table = DeltaTables(spark=DeltaSparkResource()).read(f"device_features/{version}")
    return sorted(tuple(str(v) for v in r) for r in table.drop("computed_at").collect())


def feature_check_keys(asset):
    return [k for check in feature_checks for k in check.check_keys if k.asset_key == asset.key]


def _file_digest(root: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*")):
        if path.is_file():
            digest.update(str(path.relative_to(root)).encode() + path.read_bytes())
    return digest.hexdigest()


@pytest.fixture(scope="module")
def ingested(spark, redis_server, ingested_fleet, tmp_path_factory):
    """A copy of the session's ingested fleet (six devices, three clean days), then v1 features for the range (shared by the module)."""
    assert (ingested_fleet.devices, list(ingested_fleet.days)) == (DEVICES, DAYS)
    data_root = ingested_fleet.copy_to(tmp_path_factory.mktemp("features") / "data")
    with pytest.MonkeyPatch.context() as patch, dg.instance_for_test() as instance:
        patch.setenv("FS_DATA_ROOT", str(data_root))
        resources = {
            "spark": DeltaSparkResource(),
            "delta": DeltaTables(spark=DeltaSparkResource()),
            "redis": RedisResource(url=redis_server),
        }
        first = _materialize_range(resources, instance)
        yield resources, instance, data_root, first


def test_a_range_backfill_is_one_run_writing_every_partition_and_passing_its_checks(spark, ingested):
    result = ingested[3]
    assert result.success
    materialized = {(e.asset_key.to_user_string(), e.partition) for e in result.get_asset_materialization_events()}
    assert materialized == {(a, d) for a in ("device_features_15m", "device_features_1h", "device_features_1d") for d in DAYS}
    table = DeltaTables(spark=DeltaSparkResource()).read("device_features/v1")
    partitions = {
        (r["window_date"].isoformat(), r["window_duration_minutes"])
        for r in table.select("window_date", "window_duration_minutes").distinct().collect()
    }
    assert partitions == {(d, m) for d in DAYS for m in (15, 60, 1440)}
    counts = {m: table.where(F.col("window_duration_minutes") == m).count() for m in (15, 60, 1440)}
    assert counts == {15: DEVICES * 96 * 3, 60: DEVICES * 24 * 3, 1440: DEVICES * 3}
    evaluations = result.get_asset_check_evaluations()
    assert {(e.asset_key.to_user_string(), e.check_name) for e in evaluations} == {
        (a.key.to_user_string(), c.name) for a in feature_assets for c in [k for k in feature_check_keys(a)]
    }
    failed = [(e.asset_key.to_user_string(), e.check_name, e.metadata) for e in evaluations if not e.passed]
    assert failed == []
    md = {e.asset_key.to_user_string(): e.materialization.metadata for e in result.get_asset_materialization_events()}
    assert md["device_features_1d"]["partitions_written"].value == 3
    assert md["device_features_15m"]["devices"].value == DEVICES


def test_rerunning_the_range_leaves_the_table_contents_identical(spark, ingested):
    resources, instance, _, _ = ingested
    first = _rows(spark)
    _materialize_range(resources, instance)
    assert _rows(spark) == first


def test_a_v2_backfill_leaves_v1_byte_for_byte_unchanged(spark, ingested):
    resources, instance, data_root, _ = ingested
    v1_path = data_root / "delta" / "device_features" / "v1"
    before = _file_digest(v1_path)
    result = _materialize_range(resources, instance, "v2")
    assert result.success
    assert _file_digest(v1_path) == before
    v1 = DeltaTables(spark=DeltaSparkResource()).read("device_features/v1")
    v2 = DeltaTables(spark=DeltaSparkResource()).read("device_features/v2")
    assert "vibration_compressor_rms" in v2.columns and "vibration_compressor_rms" not in v1.columns
    assert v1.count() == v2.count()
    assert v2.where("vibration_compressor_rms IS NULL").count() == 0


def test_the_checks_judge_every_version_the_run_wrote(spark, ingested):
    """The deployment on v1 with one model pinned to v2: a features run writes both tables, and a
    duplicated key in v2's (which that model trains on and is served from) fails the key check, naming v2."""
    resources, instance, _, _ = ingested
    pinned = {**resources, "feature_store": FeatureStoreResource(feature_set_version="v1", model_versions="device_health_1d=v2")}
    asset = next(a for a in feature_assets if a.key == dg.AssetKey("device_features_1d"))
    checks = [c for c in feature_checks if any(k.asset_key == asset.key for k in c.check_keys)]
    one_day = {"dagster/asset_partition_range_start": DAYS[1], "dagster/asset_partition_range_end": DAYS[1]}
    assert dg.materialize([asset, *checks], tags=one_day, resources=pinned, instance=instance).success
    v2 = DeltaTables(spark=DeltaSparkResource()).path("device_features/v2")
    one = spark.read.format("delta").load(v2).where(f"window_date = DATE'{DAYS[1]}' AND window_duration_minutes = 1440").limit(1)
    one.write.format("delta").mode("append").save(v2)
    key_check = dg.AssetCheckKey(asset.key, CHECK_KEY_UNIQUE)
    result = dg.materialize(
        [asset, *checks],
        tags=one_day,
        resources=pinned,
        instance=instance,
        selection=dg.AssetSelection.checks(key_check),
        raise_on_error=False,
    )
    (evaluation,) = result.get_asset_check_evaluations()
    assert not evaluation.passed
    assert evaluation.metadata["by_version"].value == {"v1": 0, "v2": 1} and evaluation.description == "1 duplicated keys in v2"

    # A device's window gone from v2 only: the look-back check counts its readings outside any window
    # there, and the coverage check is decided by v2, the less covered, and says so.
    lost = spark.read.format("delta").load(v2).where(f"window_date = DATE'{DAYS[1]}' AND window_duration_minutes = 1440").first()
    DeltaTable.forPath(spark, v2).delete(f"device_id = '{lost['device_id']}' AND window_date = DATE'{DAYS[1]}'")
    judged = [dg.AssetCheckKey(asset.key, CHECK_LOOKS_BACKWARD), dg.AssetCheckKey(asset.key, CHECK_COVERAGE)]
    result = dg.materialize(
        [asset, *checks],
        tags=one_day,
        resources=pinned,
        instance=instance,
        selection=dg.AssetSelection.checks(*judged),
        raise_on_error=False,
    )
    evaluations = {e.check_name: e for e in result.get_asset_check_evaluations()}
    backward, coverage = evaluations[CHECK_LOOKS_BACKWARD], evaluations[CHECK_COVERAGE]
    assert not backward.passed and backward.metadata["by_version"].value["v1"]["windows_with_outside_inputs"] == 0
    assert backward.metadata["by_version"].value["v2"]["windows_with_outside_inputs"] >= 1
    covered = coverage.metadata["by_version"].value
    assert not coverage.passed and covered["v1"] == 1.0 and covered["v2"] < 1.0 and coverage.description.startswith("v2: ")
    assert coverage.metadata["missing_examples"].value == [lost["device_id"]]
