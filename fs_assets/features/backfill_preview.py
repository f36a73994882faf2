"""`backfill_preview_job`: what a feature backfill over a date range will cost, before launching it.

Launch it from the UI (Launchpad: `start`, `end`, optionally `window_sizes`); the run's metadata
shows the partitions, the clean readings they hold (read from the Delta log's file statistics,
no data scanned, no Spark) and a rough duration from this machine's benchmark.
"""

from datetime import date, timedelta

import dagster as dg
from pydantic import Field

from fs_assets.metadata import table_metadata
from fs_domain.features import WINDOW_MINUTES
from fs_domain.run_limits import NO_SPARK_RUN, max_runtime_tags
from fs_domain.tables import CLEAN_TABLE
from fs_resources import settings
from fs_resources.delta import DeltaTables

# bench/results/features.json: 10,000 devices x 1 day (14.4 M readings), the three feature assets
# materialized in 75.0 s on 2 cores, i.e. about 192,000 readings a second for the three; plus
# starting the run's process and Spark session.
READINGS_PER_SECOND_ALL_SIZES = 192_000
RUN_OVERHEAD_SECONDS = 25


class BackfillPreviewConfig(dg.Config):
    start: str = Field(description="First day, YYYY-MM-DD")
    end: str = Field(description="Last day, YYYY-MM-DD (inclusive)")
    window_sizes: list[int] = Field(default=list(WINDOW_MINUTES), description="Window sizes (minutes) the backfill will recompute")


def readings_per_day(path: str) -> dict[str, int]:
    """Clean readings per `reading_date`, from the Delta log's per-file record counts."""
    from deltalake import DeltaTable

    actions = DeltaTable(path).get_add_actions(flatten=True)
    days = actions.column("partition.reading_date").to_pylist()
    counts: dict[str, int] = {}
    for day, records in zip(days, actions.column("num_records").to_pylist()):
        counts[str(day)] = counts.get(str(day), 0) + int(records or 0)
    return counts


@dg.op(description="Partitions, readings and an estimated duration of a feature backfill over a date range.")
def preview_feature_backfill(context: dg.OpExecutionContext, config: BackfillPreviewConfig, delta: DeltaTables) -> dict:
    first, last = date.fromisoformat(config.start), date.fromisoformat(config.end)
    if last < first:
        raise dg.Failure(description=f"end {last} is before start {first}")
    unknown = [m for m in config.window_sizes if m not in WINDOW_MINUTES]
    if unknown:
        raise dg.Failure(description=f"window sizes {unknown} are not computed; choose from {list(WINDOW_MINUTES)}")
    days = [(first + timedelta(days=i)).isoformat() for i in range((last - first).days + 1)]
    counts = readings_per_day(delta.path(CLEAN_TABLE))
    readings = sum(counts.get(d, 0) for d in days)
    empty = [d for d in days if counts.get(d, 0) == 0]
    chunks = -(-len(days) // settings.backfill_days_per_run())
    seconds = chunks * RUN_OVERHEAD_SECONDS + readings * len(config.window_sizes) / 3 / READINGS_PER_SECOND_ALL_SIZES
    summary = {
        "days": len(days),
        "partitions": len(days) * len(config.window_sizes),
        "readings": readings,
        "estimated_seconds": round(seconds),
        "runs": chunks,
    }
    context.add_output_metadata(
        summary
        | {
            "estimate": dg.MetadataValue.md(
                f"**{len(days)} days × {len(config.window_sizes)} window sizes = {summary['partitions']} partitions**, "
                f"{readings:,} clean readings, roughly **{_duration(seconds)}** on this machine "
                f"(runs of at most {settings.backfill_days_per_run()} days, one Spark job per window size each)."
            ),
            "days_without_readings": dg.MetadataValue.json(empty[:100]),
            "readings_per_day": table_metadata([{"day": d, "readings": counts.get(d, 0)} for d in days[:400]]),
        }
    )
    return summary


def _duration(seconds: float) -> str:
    minutes, rest = divmod(int(seconds), 60)
    return f"{minutes} min {rest} s" if minutes else f"{rest} s"


@dg.job(
    tags=max_runtime_tags(NO_SPARK_RUN, spark=False),
    description="Preview a feature backfill: partitions, readings and estimated time for a date range (no data is written).",
)
def backfill_preview_job():
    preview_feature_backfill()
