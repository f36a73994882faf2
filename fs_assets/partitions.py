"""Partitions: the UTC days every time-partitioned asset shares, and one partition per model."""

import dagster as dg

from fs_domain.models import MODELS

# The earliest day the store accepts; SKAB's recordings (2020-02-08 onwards) are the oldest data.
PARTITIONS_START_DATE = "2020-01-01"

# end_offset=1 includes today, so a live landing zone can be ingested while the day is running.
daily_partitions = dg.DailyPartitionsDefinition(start_date=PARTITIONS_START_DATE, timezone="UTC", end_offset=1)

# training_dataset and feature_reference_snapshot: one partition per model spec.
model_partitions = dg.StaticPartitionsDefinition(list(MODELS))
