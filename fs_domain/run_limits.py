"""How long each kind of run may last, and how long a run may wait in the queue with nothing running.

A run past its limit is hung (a read that never returns, a JVM stuck collecting garbage): run
monitoring ends it as failed, which gives back its pool slot and lets its job's retries start it
again, instead of every later run of its table waiting behind it. A limit is sized on the design's
fleet (100,000 devices) from the largest run the job can be handed, with room for a second run
sharing the machine: a limit too tight would end a healthy run at every retry, for good.
"""

from datetime import timedelta

# The run tag run monitoring reads (Dagster's `dagster/max_runtime`), in seconds.
MAX_RUNTIME_TAG = "dagster/max_runtime"
# Runs that start a Spark session carry this tag. The instance runs at most two of them at once
# (what a 2-core machine carries) and keeps a third run slot for runs that start none (freshness
# checks, the alert path's self-test, the online store's watch): a page waits for no Spark run.
SPARK_RUN_TAG = "fs/spark_session"

# One day per run (the landing sensor requests days one by one): at most a whole day cleaned again,
# which bench/results/fleet_day_100000.json measures at about 11 minutes for its step alone; a
# catch-up's merge into a day already held costs more than writing it fresh. Over three times that.
CLEAN_READINGS_RUN = timedelta(minutes=40)
# The registry of the whole fleet is read and replaced in seconds (same results file); the run's own
# start (process, Spark session) is most of it.
REGISTRY_RUN = timedelta(minutes=10)
# The three window sizes of up to FS_BACKFILL_DAYS_PER_RUN (3) late days and the scores and drift
# after them: a day of the three sizes is about 10 minutes in the same results file.
FEATURES_AUTOMATION_RUN = timedelta(minutes=60)
# The Device object and its projection into Redis take seconds at the design's scale (same results
# file): a quarter of an hour leaves the hourly projection its next slot.
PREHYDRATION_RUN = timedelta(minutes=15)
# Reconciliation reads 1,000 device-window pairs by default; every device when launched with
# `sample_size: 0`.
RECONCILIATION_RUN = timedelta(minutes=30)
# Runs that read recorded metadata, Redis or a Delta log and start no Spark session: the watch of the
# online store, the freshness checks, the alert path's self-test, the backfill preview.
NO_SPARK_RUN = timedelta(minutes=5)
# Weekly OPTIMIZE and VACUUM of every table; not measured at the design's scale, and nothing waits
# on it (it claims no table's pool), so it is allowed most of its quiet Sunday morning.
TABLE_MAINTENANCE_RUN = timedelta(hours=4)

# A run waits in the queue for a free run slot, a table's pool or a tag's limit. With nothing
# running none of them is taken, so the queue should empty within a daemon loop; a run killed
# mid-step holds its table's pool slot until run monitoring frees it (a minute after the run is
# marked failed, dagster_home/dagster.yaml). Past this wait with nothing running, nothing will
# start the run: a person has to look. Below the clean readings' SLA, so the page comes first.
QUEUE_STALLED = timedelta(minutes=10)


def max_runtime_tags(limit: timedelta, *, spark: bool = True) -> dict[str, str]:
    """The run tags that make run monitoring end a run past `limit`, and that count it among the
    runs holding a Spark session (`spark`) or not."""
    return {MAX_RUNTIME_TAG: str(int(limit.total_seconds()))} | ({SPARK_RUN_TAG: "true"} if spark else {})
