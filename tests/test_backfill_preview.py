"""The backfill preview counts partitions and readings from the Delta log, before anything runs."""

from __future__ import annotations

from datetime import date, timedelta

import dagster as dg
import pytest

from fs_assets.features import backfill_preview
from fs_assets.features.backfill_preview import BackfillPreviewConfig, backfill_preview_job, preview_feature_backfill
from fs_domain.tables import CLEAN_TABLE
from fs_resources.delta import DeltaTables
from fs_resources.spark import DeltaSparkResource

# The benchmark the estimate is calibrated on (bench/results/features.json): 10,000 devices x 1 day,
# 14.4 M readings, the three feature assets in 75.0 s; a run and its Spark session take 25 s to start.
BENCH_READINGS, BENCH_SECONDS, RUN_START_SECONDS = 14_400_000, 75.0, 25


def expected_seconds(readings: int, window_sizes: int, runs: int = 1) -> int:
    """The estimate worked out here: a start per run plus the benchmark's rate, a third of it per window size."""
    return round(runs * RUN_START_SECONDS + readings / (BENCH_READINGS / BENCH_SECONDS) * window_sizes / 3)


def output_metadata(result: dg.ExecuteInProcessResult) -> dict:
    (output,) = [e for e in result.events_for_node("preview_feature_backfill") if e.event_type_value == "STEP_OUTPUT"]
    return {k: v.value for k, v in output.event_specific_data.metadata.items()}


@pytest.mark.integration
def test_preview_reports_partitions_readings_and_an_estimate(ingested_fleet):
    # Read only: the session's ingested fleet, through a resource pointed at its tables.
    delta = DeltaTables(spark=DeltaSparkResource(), root=str(ingested_fleet.root / "delta"))
    clean = delta.read(CLEAN_TABLE)
    per_day = {d: clean.where(f"reading_date = DATE'{d}'").count() for d in ingested_fleet.days}
    assert per_day == {d: ingested_fleet.devices * 1440 for d in ingested_fleet.days}  # a clean fleet: one reading a minute
    empty_day = (date.fromisoformat(ingested_fleet.days[-1]) + timedelta(days=1)).isoformat()
    expected = sum(per_day.values())

    result = backfill_preview_job.execute_in_process(
        resources={"delta": delta},
        run_config={
            "ops": {"preview_feature_backfill": {"config": {"start": ingested_fleet.days[0], "end": empty_day, "window_sizes": [60, 1440]}}}
        },
    )
    summary = result.output_for_node("preview_feature_backfill")
    # Four days in runs of at most FS_BACKFILL_DAYS_PER_RUN (3): two runs.
    assert summary == {"days": 4, "partitions": 8, "readings": expected, "estimated_seconds": expected_seconds(expected, 2, 2), "runs": 2}
    md = output_metadata(result)
    assert md["days_without_readings"] == [empty_day]
    assert {r.data["day"]: r.data["readings"] for r in md["readings_per_day"].records} == {**per_day, empty_day: 0}

    bad = backfill_preview_job.execute_in_process(
        resources={"delta": delta},
        raise_on_error=False,
        run_config={"ops": {"preview_feature_backfill": {"config": {"start": ingested_fleet.days[1], "end": ingested_fleet.days[0]}}}},
    )
    assert not bad.success


class _TablesAt:
    """Where the clean table lives; all the op asks of its `delta` resource (no Spark session)."""

    def path(self, table: str) -> str:
        return f"/nowhere/{table}"


@pytest.mark.unit
def test_the_estimate_is_the_benchmarks_rate_per_window_size_plus_a_run_start(monkeypatch):
    days = ["2026-01-05", "2026-01-06", "2026-01-07"]
    monkeypatch.setattr(backfill_preview, "readings_per_day", lambda path: {d: BENCH_READINGS for d in days[:2]})

    def preview(end: str, sizes: list[int]) -> dict:
        context = dg.build_op_context(resources={"delta": _TablesAt()})
        return preview_feature_backfill(context, BackfillPreviewConfig(start=days[0], end=end, window_sizes=sizes))

    # The benchmark's own day at all three sizes comes out at its measured time plus the run start.
    one_day = preview(days[0], [15, 60, 1440])
    assert one_day["readings"] == BENCH_READINGS and abs(one_day["estimated_seconds"] - (RUN_START_SECONDS + BENCH_SECONDS)) <= 1
    assert one_day["estimated_seconds"] == expected_seconds(BENCH_READINGS, 3)
    # Two days with readings and one without, at one size: twice the readings, a third of the work per reading.
    three_days = preview(days[2], [60])
    assert three_days == {
        "days": 3,
        "partitions": 3,
        "readings": 2 * BENCH_READINGS,
        "estimated_seconds": expected_seconds(2 * BENCH_READINGS, 1),
        "runs": 1,
    }
    assert three_days["estimated_seconds"] < one_day["estimated_seconds"]
    monkeypatch.setenv("FS_BACKFILL_DAYS_PER_RUN", "1")  # a day per run: one start per day
    assert preview(days[2], [60])["runs"] == 3
    with pytest.raises(dg.Failure, match="window sizes \\[30\\]"):
        preview(days[0], [30])
