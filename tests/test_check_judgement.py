"""What the feature checks judge: the run and partition they belong to (a backfill of another day does
not change a day's verdict), and coverage over the devices that ought to report on the window's day,
with the silences declared in advance named and left out."""

from __future__ import annotations

from datetime import date, timedelta
from pathlib import Path

import dagster as dg
import pandas as pd
import pyarrow.parquet as pq
import pytest

from fs_assets.features.assets import device_features_15m
from fs_checks.feature_checks import CHECK_COVERAGE, CHECK_LOOKS_BACKWARD, build_feature_checks
from fs_domain.contract import GapReason
from fs_domain.features import WINDOWS
from fs_resources import settings
from fs_resources.simulator.fleet import landing_dir, write_expected_gaps, write_parquet
from tests.check_runs import checks_of, code_location, evaluations, run_checks_alone, verdict_of
from tests.ingest_runs import materialize_clean, materialize_registry, pipeline_resources

pytestmark = pytest.mark.integration

ASSET = device_features_15m.key.to_user_string()
WINDOWS_BY_ASSET = {w.asset_name: w for w in WINDOWS}
LOOK_BACK = dg.AssetCheckKey(device_features_15m.key, CHECK_LOOKS_BACKWARD)
COVERAGE = dg.AssetCheckKey(device_features_15m.key, CHECK_COVERAGE)


@pytest.fixture
def fleet(spark, redis_server, ingested_fleet, tmp_path, monkeypatch):
    """A private copy of the session's ingested fleet (six devices, three clean days) and a fresh instance."""
    root = ingested_fleet.copy_to(tmp_path / "data")
    monkeypatch.setenv("FS_DATA_ROOT", str(root))
    with dg.instance_for_test() as instance:
        resources = pipeline_resources(redis_server)
        yield {"root": root, "days": ingested_fleet.days, "instance": instance, "resources": resources, "defs": code_location(resources)}


def _features(fleet, day: str, with_checks: bool = False) -> dg.ExecuteInProcessResult:
    checks = [c for c in build_feature_checks(WINDOWS_BY_ASSET[ASSET]) if c.check_keys & {LOOK_BACK, COVERAGE}] if with_checks else []
    result = dg.materialize([device_features_15m, *checks], partition_key=day, resources=fleet["resources"], instance=fleet["instance"])
    assert result.success
    return result


def _judge(fleet, day: str) -> dict:
    result = run_checks_alone(fleet["defs"], checks_of(fleet["defs"], [LOOK_BACK, COVERAGE]), fleet["instance"], day)
    return evaluations(result)


def _computed_at(result: dg.ExecuteInProcessResult) -> str:
    (event,) = result.get_asset_materialization_events()
    return event.materialization.metadata["computed_at"].value


def _late_readings_land(fleet, day: str) -> None:
    """Five more readings of one device for `day`, half a minute after five it sent, cleaned into the day."""
    sent = pq.read_table(next(landing_dir(str(fleet["root"]), date.fromisoformat(day)).glob("part-*.parquet"))).to_pandas()
    late = sent[sent["device_id"] == sent["device_id"].iloc[0]].iloc[600:605].assign(ts=lambda f: f["ts"] + pd.Timedelta(seconds=30))
    write_parquet(late, landing_dir(str(fleet["root"]), date.fromisoformat(day)) / "late-extra.parquet")
    assert materialize_clean(fleet["resources"], fleet["instance"], day, with_checks=False).success


def test_a_days_checks_judge_that_days_run_not_a_backfill_of_another_day_after_it(fleet):
    day_a, day_b = fleet["days"][0], fleet["days"][1]
    run_a = _features(fleet, day_a)
    # Day A's readings change after its run, and a backfill of day B then reads the newer clean table.
    _late_readings_land(fleet, day_a)
    run_b = _features(fleet, day_b)

    judged = _judge(fleet, day_a)
    look_back, coverage = judged[(ASSET, CHECK_LOOKS_BACKWARD)], judged[(ASSET, CHECK_COVERAGE)]
    # Judged on what day A's run read: the clean table at its version, windows closed by its time.
    assert look_back.passed, look_back.metadata
    assert look_back.metadata["judged_windows_closed_by"].value == _computed_at(run_a) != _computed_at(run_b)
    for evaluation in (look_back, coverage):
        verdict = verdict_of(evaluation)
        assert (verdict.run_id, verdict.partition, verdict.asset) == (run_a.run_id, day_a, ASSET)

    # Run with the asset, a check judges that run's materialization, which read the late readings.
    again = _features(fleet, day_a, with_checks=True)
    for evaluation in evaluations(again).values():
        assert evaluation.passed and verdict_of(evaluation).run_id == again.run_id


def _register(frame: pd.DataFrame, device_id: str, installed: str, status: str = "active") -> pd.DataFrame:
    return pd.concat([frame, frame.iloc[[0]].assign(device_id=device_id, install_date=installed, status=status)], ignore_index=True)


def test_coverage_counts_devices_installed_by_the_day_and_leaves_out_declared_silences_only(fleet):
    day = fleet["days"][-1]
    after = (date.fromisoformat(day) + timedelta(days=1)).isoformat()
    path = settings.registry_csv_path()
    registry = pd.read_csv(path, dtype=str, keep_default_na=False)
    # None of these three sends a reading: one registered long ago, one installed the day after, one retired.
    registry = _register(registry, "dev-silent", "2025-06-01")
    registry = _register(registry, "dev-installed-later", after)
    registry = _register(registry, "dev-retired", "2025-06-01", status="retired")
    registry.to_csv(path, index=False)
    materialize_registry(fleet["resources"], fleet["instance"])
    gap = pd.DataFrame(
        [{"device_id": "dev-silent", "gap_start": f"{day}T00:00:00Z", "gap_end": f"{after}T00:00:00Z", "reason": GapReason.OUTAGE}]
    )
    write_expected_gaps(gap, str(fleet["root"]), date.fromisoformat(day))

    result = _features(fleet, day, with_checks=True)
    declared = evaluations(result)[(ASSET, CHECK_COVERAGE)]
    assert declared.passed, declared.metadata
    assert verdict_of(declared).observed == 1.0 and verdict_of(declared).threshold == 0.99
    metadata = {k: v.value for k, v in declared.metadata.items()}
    assert (metadata["installed_active_devices"], metadata["expected_devices"], metadata["covered_devices"]) == (7, 6, 6)
    assert metadata["expected_gaps"] == 1 and metadata["expected_gap_examples"] == {"dev-silent": GapReason.OUTAGE}

    # The same silence undeclared is an incident: an error against the error threshold, naming the device.
    Path(settings.expected_gaps_csv_path(day)).unlink()
    undeclared = _judge(fleet, day)[(ASSET, CHECK_COVERAGE)]
    verdict = verdict_of(undeclared)
    assert not undeclared.passed and undeclared.severity == dg.AssetCheckSeverity.ERROR
    assert (verdict.observed, verdict.threshold, verdict.comparison) == (6 / 7, 0.95, ">=")
    assert undeclared.metadata["missing_examples"].value == ["dev-silent"] and undeclared.metadata["expected_gaps"].value == 0
    # The page says where the missing devices are: a whole site missing is its gateway.
    site = registry.iloc[0]["site_id"]
    at_site = int(((registry["site_id"] == site) & (registry["status"] == "active") & (registry["install_date"] <= day)).sum())
    assert undeclared.metadata["missing_by_site"].value == {site: f"1 of {at_site}"}
    assert f"missing at {site} (1 of {at_site} expected there)" in undeclared.description
