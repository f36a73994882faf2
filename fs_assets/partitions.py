"""Partitions: the UTC days every time-partitioned asset shares, and one partition per model."""

import dagster as dg

from fs_domain.models import MODEL_NAMES
from fs_resources import settings

# The earliest day the store accepts; SKAB's recordings (2020-02-08 onwards) are the oldest data.
PARTITIONS_START_DATE = "2020-01-01"

# end_offset=1 includes today, so a live landing zone can be ingested while the day is running.
daily_partitions = dg.DailyPartitionsDefinition(start_date=PARTITIONS_START_DATE, timezone="UTC", end_offset=1)

# A UI backfill of a long range runs as runs of at most `FS_BACKFILL_DAYS_PER_RUN` days, each a
# partition range that replaces its days whole: a failed run is re-run alone ("Re-execute failed"),
# and no run's memory grows with the range.
daily_backfill_policy = dg.BackfillPolicy.multi_run(max_partitions_per_run=settings.backfill_days_per_run())

# The training assets: one partition per model (its spec on the version it is pinned to).
model_partitions = dg.StaticPartitionsDefinition(list(MODEL_NAMES))
