"""Whether a job already has a run waiting in the queue: a sensor or schedule that finds one requests
no other, since the waiting run reads its inputs (files, snapshots) only when it starts."""

import dagster as dg

WAITING = [dg.DagsterRunStatus.QUEUED, dg.DagsterRunStatus.NOT_STARTED]


def run_waiting(instance: dg.DagsterInstance, job_name: str, tags: dict[str, str] | None = None) -> bool:
    """Whether a run of `job_name` (with `tags`) is queued and has not started."""
    return bool(instance.get_run_records(filters=dg.RunsFilter(job_name=job_name, tags=tags or {}, statuses=WAITING), limit=1))
