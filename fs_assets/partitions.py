"""The daily partitions every time-partitioned asset shares: one per UTC day of readings."""

import dagster as dg

# The earliest day the store accepts; SKAB's recordings (2020-02-08 onwards) are the oldest data.
PARTITIONS_START_DATE = "2020-01-01"

# end_offset=1 includes today, so a live landing zone can be ingested while the day is running.
daily_partitions = dg.DailyPartitionsDefinition(start_date=PARTITIONS_START_DATE, timezone="UTC", end_offset=1)
