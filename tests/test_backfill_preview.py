"""The backfill preview counts partitions and readings from the Delta log, before anything runs."""

from __future__ import annotations


from fs_assets.features.backfill_preview import backfill_preview_job
from fs_resources.delta import DeltaTables
from fs_resources.simulator.fleet import FleetSpec, generate
from tests.conftest import SIM_START
from tests.ingest_runs import clean_rows, materialize_clean_range, materialize_registry


def test_preview_reports_partitions_readings_and_an_estimate(spark, data_root, resources, instance):
    generate(FleetSpec.clean(devices=3, start=SIM_START, days=2, seed=5), str(data_root))
    materialize_registry(resources, instance)
    days = [SIM_START.isoformat(), SIM_START.replace(day=SIM_START.day + 1).isoformat()]
    assert materialize_clean_range(resources, instance, days[0], days[1]).success
    expected = sum(clean_rows(spark, d).count() for d in days)
    result = backfill_preview_job.execute_in_process(
        resources={"delta": DeltaTables()},
        run_config={"ops": {"preview_feature_backfill": {"config": {"start": days[0], "end": SIM_START.replace(day=SIM_START.day + 2).isoformat(), "window_sizes": [60, 1440]}}}},
    )
    summary = result.output_for_node("preview_feature_backfill")
    assert summary == {"days": 3, "partitions": 6, "readings": expected, "estimated_seconds": summary["estimated_seconds"], "runs": 2}
    assert expected == 3 * 2 * 1440 and summary["estimated_seconds"] >= 25
    bad = backfill_preview_job.execute_in_process(
        resources={"delta": DeltaTables()}, raise_on_error=False,
        run_config={"ops": {"preview_feature_backfill": {"config": {"start": days[1], "end": days[0]}}}},
    )
    assert not bad.success
