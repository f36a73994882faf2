"""A DAGSTER_HOME for a test that runs a real daemon: the instance settings of `make run`
(dagster_home/dagster.yaml: run limits, pools, run retries, run monitoring), with run monitoring
looking at runs more often.

How often run monitoring looks decides how long such a test waits for a dead run to be marked
failed, and for its slots to be freed once their pause has passed, not what the daemon does. It
is shortened only where dagster.yaml sets it; tests/test_code_location.py checks the values
`make run` itself uses.

The pause before a dead run's pool slots are freed (`free_slots_after_run_end_seconds`) stays as
`make run` has it: a killed run's retry waits that long in the queue, where the landing sensor's
next tick (once a minute) finds it waiting and requests no second run for the same files. Shorter,
that tick came while the retry ran, and one more cold run followed.
"""

from __future__ import annotations

from pathlib import Path

import yaml

INSTANCE_YAML = Path(__file__).resolve().parents[1] / "dagster_home" / "dagster.yaml"
MONITORING_POLL_SECONDS = 2


def daemon_home(home: Path) -> Path:
    """Write `home`/dagster.yaml (creating `home`) and return `home`."""
    settings = yaml.safe_load(INSTANCE_YAML.read_text())
    monitoring = settings.get("run_monitoring") or {}
    if "poll_interval_seconds" in monitoring:
        monitoring["poll_interval_seconds"] = min(monitoring["poll_interval_seconds"], MONITORING_POLL_SECONDS)
    home.mkdir(parents=True, exist_ok=True)
    (home / "dagster.yaml").write_text(yaml.safe_dump(settings, sort_keys=False))
    return home
