"""On-call sink settings: read as `dg.EnvVar`s when the code location loads, checked there, and a
setting that cannot work fails `dagster definitions validate` naming its variable."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg
import pytest

from fs_resources.alerts import SETTING_VARIABLES, AlertSinkResource, AlertSinkSettingError, RouteSink, route_env
from fs_sensors.alert_path_self_test import alert_path_self_test_job

ROOT = Path(__file__).resolve().parents[1]
EVERY_VARIABLE = [name for base in SETTING_VARIABLES.values() for name in (base, *(route_env(base, r) for r in ("data-engineering", "ml")))]


@pytest.fixture
def clean_environment(monkeypatch):
    """No FS_ONCALL_* variable of the machine running the tests leaks in."""
    for name in EVERY_VARIABLE:
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


@pytest.mark.unit
@pytest.mark.parametrize(
    "environment, named",
    [
        ({"FS_ONCALL_WEBHOOK_FORMAT": "teams"}, "FS_ONCALL_WEBHOOK_FORMAT must be slack or pagerduty, got 'teams'"),
        ({"FS_ONCALL_WEBHOOK_URL_ML": "https://h/x", "FS_ONCALL_WEBHOOK_FORMAT_ML": "opsgenie"}, "FS_ONCALL_WEBHOOK_FORMAT_ML must be"),
        ({"FS_ONCALL_WEBHOOK_URL": "hooks.example.com/services/T0/B0/s3cr3t"}, "FS_ONCALL_WEBHOOK_URL must be an http(s) URL"),
        (
            {"FS_ONCALL_WEBHOOK_URL_DATA_ENGINEERING": "ftp://files.example.com/drop"},
            "FS_ONCALL_WEBHOOK_URL_DATA_ENGINEERING must be an http(s)",
        ),
        (
            {"FS_ONCALL_WEBHOOK_URL": "https://events.example.com/v2/enqueue", "FS_ONCALL_WEBHOOK_FORMAT": "pagerduty"},
            "FS_ONCALL_ROUTING_KEY_DATA_ENGINEERING or FS_ONCALL_ROUTING_KEY must be set",
        ),
        (
            # The ML route pages PagerDuty with a key only data engineering has.
            {
                "FS_ONCALL_WEBHOOK_URL": "https://events.example.com/v2/enqueue",
                "FS_ONCALL_WEBHOOK_FORMAT_ML": "pagerduty",
                "FS_ONCALL_ROUTING_KEY_DATA_ENGINEERING": "rk-de",
            },
            "FS_ONCALL_ROUTING_KEY_ML or FS_ONCALL_ROUTING_KEY must be set",
        ),
    ],
)
def test_a_setting_that_cannot_work_fails_building_the_sink_and_is_named(clean_environment, environment, named):
    for name, value in environment.items():
        clean_environment.setenv(name, value)
    with pytest.raises(AlertSinkSettingError) as raised:
        AlertSinkResource.from_environment()
    assert named in str(raised.value)
    assert "s3cr3t" not in str(raised.value)


@pytest.mark.unit
def test_config_is_checked_as_the_environment_is_and_names_its_field(clean_environment):
    with pytest.raises(AlertSinkSettingError, match=r"routes\.ml\.webhook_format must be slack or pagerduty"):
        AlertSinkResource(routes={"ml": RouteSink(webhook_format="email")})
    with pytest.raises(AlertSinkSettingError, match=r"routes\.ML: no such route"):
        AlertSinkResource(routes={"ML": RouteSink(webhook_url="https://h/x")})
    # Each route's own key, or one for both.
    AlertSinkResource(webhook_url="https://h/x", webhook_format="pagerduty", routing_key="rk")
    AlertSinkResource(
        webhook_url="https://h/x",
        webhook_format="pagerduty",
        routes={"ml": RouteSink(routing_key="rk-ml"), "data-engineering": RouteSink(routing_key="rk-de")},
    )


@pytest.mark.unit
def test_secrets_stay_environment_variables_in_the_definitions(clean_environment):
    clean_environment.setenv("FS_ONCALL_WEBHOOK_URL_ML", "https://events.example.com/v2/enqueue")
    clean_environment.setenv("FS_ONCALL_WEBHOOK_FORMAT_ML", "pagerduty")
    clean_environment.setenv("FS_ONCALL_ROUTING_KEY_ML", "rk-ml-secret")
    sink = AlertSinkResource.from_environment()
    key = sink.routes["ml"].routing_key
    assert isinstance(key, dg.EnvVar) and key.env_var_name == "FS_ONCALL_ROUTING_KEY_ML"
    assert sink.webhook_url is None and "data-engineering" not in sink.routes
    assert sink.destinations() == {"data-engineering": f"file {sink.jsonl_file()}", "ml": "pagerduty webhook at https://events.example.com"}


@pytest.mark.integration
def test_with_nothing_set_the_location_loads_and_pages_into_the_jsonl_file(clean_environment):
    sink = AlertSinkResource.from_environment()
    with dg.instance_for_test() as instance:
        home = Path(os.environ["DAGSTER_HOME"])  # the test instance's
        sink.beat(at=time.time() - 3600)
        result = alert_path_self_test_job.execute_in_process(resources={"alerts": sink}, instance=instance, raise_on_error=False)
        assert not result.success  # the heartbeat is stale: the self-test pages
        (page,) = [json.loads(line) for line in (home / "alerts.jsonl").read_text().splitlines()]
        (record,) = [json.loads(line) for line in (home / "alert_path_down.jsonl").read_text().splitlines()]
    assert page["action"] == "trigger" and page["check"] == "alert_path_heartbeat"
    assert record["carried_by"] == "data-engineering"


@pytest.mark.e2e
def test_dagster_definitions_validate_fails_naming_each_setting_that_cannot_work(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in EVERY_VARIABLE} | {
        "DAGSTER_HOME": str(tmp_path),
        "FS_ONCALL_WEBHOOK_URL": "hooks.example.com/services/T0/B0/s3cr3t",
        "FS_ONCALL_WEBHOOK_FORMAT_ML": "teams",
        "FS_ONCALL_WEBHOOK_URL_DATA_ENGINEERING": "https://events.example.com/v2/enqueue",
        "FS_ONCALL_WEBHOOK_FORMAT_DATA_ENGINEERING": "pagerduty",
    }
    done = subprocess.run(
        [str(Path(sys.executable).parent / "dagster"), "definitions", "validate", "-w", "workspace.yaml"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    said = done.stdout + done.stderr
    assert done.returncode != 0, said[-3000:]
    assert "Validation failed for code location" in said
    for named in (
        "FS_ONCALL_WEBHOOK_URL must be an http(s) URL",
        "FS_ONCALL_WEBHOOK_FORMAT_ML must be slack or pagerduty, got 'teams'",
        "FS_ONCALL_ROUTING_KEY_DATA_ENGINEERING or FS_ONCALL_ROUTING_KEY must be set",
    ):
        assert named in said, said[-3000:]
    assert "s3cr3t" not in said
