"""Drift reports and on-call alerts: real runs, a real sensor, a real HTTP receiver on 127.0.0.1."""

from __future__ import annotations

import base64
import json
import socket
import threading
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import dagster as dg
import pandas as pd
import pytest

from fs_assets.monitoring.assets import feature_drift_report
from fs_assets.training.datasets import feature_statistics
from fs_assets.training.reference import Promotion, ReferenceSnapshot, record_promotion, write_snapshot
from fs_checks.drift_checks import CHECK_FEATURE_DRIFT, CHECK_NULL_FRACTION_DRIFT, drift_checks
from fs_checks.results import check_result
from fs_domain.models import DEVICE_HEALTH_1D
from fs_domain.verdicts import Verdict, guide_section
from fs_resources.alerts import Alert, AlertSinkResource, RouteSink
from fs_resources.delta import DeltaTables
from fs_resources.feature_store import FeatureStoreResource
from fs_resources.spark import DeltaSparkResource
from fs_sensors.alert_routing_sensor import alert_routing_sensor
from tests.feature_tables import windows_frame, write_windows

UTC = timezone.utc
SECRET = "T0001/B0002/s3cr3tT0ken"


class Receiver:
    """An HTTP server collecting JSON POSTs; `up = False` answers 503 as a receiver in trouble."""

    def __init__(self):
        self.bodies: list[dict] = []
        self.posts = 0
        self.authorization: str | None = None
        self.up = True
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.posts += 1
                receiver.authorization = self.headers.get("Authorization")
                if not receiver.up:
                    self.send_response(503)
                    self.end_headers()
                    return
                receiver.bodies.append(json.loads(body))
                self.send_response(200)
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_port}/services/{SECRET}"

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver():
    server = Receiver()
    yield server
    server.close()


# A real asset with real checks whose outcome the test controls: one pipeline check, one drift check,
# each writing its result in the one shape every check writes.
OUTCOME = {"coverage": True, "drift": True}
COVERAGE_TO_DO = f"look for the missing devices' readings in the quarantine; {guide_section('Features: coverage')}"
DRIFT_TO_DO = f"read the drift report's charts; {guide_section('Drift: PSI and null fractions')}"


@dg.asset(
    name="device_features_1h",
    check_specs=[
        dg.AssetCheckSpec("check_feature_coverage", asset="device_features_1h"),
        dg.AssetCheckSpec(CHECK_FEATURE_DRIFT, asset="device_features_1h"),
    ],
)
def watched_asset():
    yield dg.MaterializeResult()
    coverage = Verdict(0.99 if OUTCOME["coverage"] else 0.9, 0.95, ">=", "share of expected devices", COVERAGE_TO_DO)
    yield check_result(coverage, check_name="check_feature_coverage", severity=dg.AssetCheckSeverity.ERROR)
    drift = Verdict(0.02 if OUTCOME["drift"] else 0.17, 0.1, "<", "PSI", DRIFT_TO_DO)
    yield check_result(drift, check_name=CHECK_FEATURE_DRIFT, severity=dg.AssetCheckSeverity.WARN)


def run_watched(instance, coverage: bool, drift: bool = True):
    OUTCOME.update(coverage=coverage, drift=drift)
    return dg.materialize([watched_asset], instance=instance)


def tick(instance, cursor, sink: AlertSinkResource):
    context = dg.build_sensor_context(instance=instance, cursor=cursor, resources={"alerts": sink})
    result = alert_routing_sensor(context)
    return context.cursor, result


@pytest.mark.integration
def test_a_failing_check_pages_once_and_resolves_once(receiver):
    sink = AlertSinkResource(webhook_url=receiver.url, webhook_format="pagerduty", routing_key="rk-test")
    with dg.instance_for_test() as instance:
        run_watched(instance, coverage=False)
        cursor, _ = tick(instance, None, sink)
        cursor, _ = tick(instance, cursor, sink)
        failing_again = run_watched(instance, coverage=False)
        cursor, _ = tick(instance, cursor, sink)
        assert len(receiver.bodies) == 1
        (page,) = receiver.bodies
        assert page["event_action"] == "trigger" and page["routing_key"] == "rk-test"
        assert page["dedup_key"] == "check_feature_coverage|device_features_1h|-"
        details = page["payload"]
        assert details["severity"] == "error" and details["group"] == "data-engineering" and details["class"] == "check_feature_coverage"
        assert details["custom_details"]["observed"] == 0.9 and details["custom_details"]["threshold"] == 0.95
        assert details["custom_details"]["comparison"] == ">=" and details["custom_details"]["unit"] == "share of expected devices"
        assert details["custom_details"]["what_to_do"] == COVERAGE_TO_DO and details["custom_details"]["urgency"] == "high"
        assert details["summary"] == (
            "check_feature_coverage failed on device_features_1h: observed 0.9 share of expected devices, "
            "expected >= 0.95 share of expected devices"
        )
        assert page["links"][0]["href"].startswith("http://127.0.0.1:3000/runs/")
        fixed = run_watched(instance, coverage=True)
        cursor, _ = tick(instance, cursor, sink)
        cursor, _ = tick(instance, cursor, sink)
        assert [b["event_action"] for b in receiver.bodies] == ["trigger", "resolve"]
        assert receiver.bodies[1]["dedup_key"] == page["dedup_key"]
        assert fixed.run_id != failing_again.run_id


@pytest.mark.integration
def test_drift_goes_to_the_ml_route_and_pipeline_checks_to_data_engineering(receiver):
    sink = AlertSinkResource(webhook_url=receiver.url, webhook_format="slack")
    with dg.instance_for_test() as instance:
        run_watched(instance, coverage=False, drift=False)
        tick(instance, None, sink)
        texts = sorted(b["text"] for b in receiver.bodies)
        assert len(texts) == 2
        assert "[data-engineering] ERROR: check_feature_coverage failed" in texts[0]
        assert "[ml] WARNING: check_feature_drift failed" in texts[1]


@pytest.mark.integration
def test_each_route_reaches_only_its_own_receiver_and_a_route_without_one_the_default_sink(monkeypatch):
    ml, engineering, default = Receiver(), Receiver(), Receiver()
    try:
        # The ML route from the environment (PagerDuty, its own key); data engineering from config.
        monkeypatch.setenv("FS_ONCALL_WEBHOOK_URL_ML", ml.url)
        monkeypatch.setenv("FS_ONCALL_WEBHOOK_FORMAT_ML", "pagerduty")
        monkeypatch.setenv("FS_ONCALL_ROUTING_KEY_ML", "rk-ml")
        sink = AlertSinkResource.from_environment(
            webhook_url=default.url, routes={"data-engineering": RouteSink(webhook_url=engineering.url)}
        )
        with dg.instance_for_test() as instance:
            run_watched(instance, coverage=False, drift=False)
            tick(instance, None, sink)
        assert [(b["payload"]["class"], b["routing_key"]) for b in ml.bodies] == [(CHECK_FEATURE_DRIFT, "rk-ml")]
        assert len(engineering.bodies) == 1 and "[data-engineering] ERROR: check_feature_coverage failed" in engineering.bodies[0]["text"]
        assert default.bodies == []
        # A route without a destination of its own falls back to the default sink.
        with dg.instance_for_test() as instance:
            run_watched(instance, coverage=False, drift=False)
            tick(instance, None, AlertSinkResource.from_environment(webhook_url=default.url))
        assert len(default.bodies) == 1 and "[data-engineering]" in default.bodies[0]["text"]
        assert [b["payload"]["class"] for b in ml.bodies] == [CHECK_FEATURE_DRIFT, CHECK_FEATURE_DRIFT] and len(engineering.bodies) == 1
    finally:
        for receiver in (ml, engineering, default):
            receiver.close()


@pytest.mark.integration
def test_an_alert_waits_while_the_receiver_is_down_and_arrives_once_it_is_up(receiver):
    sink = AlertSinkResource(webhook_url=receiver.url, attempts=2, timeout_seconds=2)
    with dg.instance_for_test() as instance:
        run_watched(instance, coverage=False)
        receiver.up = False
        cursor, waiting = tick(instance, None, sink)
        cursor, waiting = tick(instance, cursor, sink)
        (waiting_alerts,) = json.loads(cursor)["outbox"].values()
        assert receiver.bodies == [] and len(waiting_alerts) == 1
        messages: list[str] = []
        assert not sink.deliver(Alert.from_dict(waiting_alerts[0]), log=messages.append)
        receiver.up = True
        cursor, delivered = tick(instance, cursor, sink)
        cursor, _ = tick(instance, cursor, sink)
        assert len(receiver.bodies) == 1 and json.loads(cursor)["outbox"] == {}
        said = " ".join(messages) + str(waiting) + str(delivered) + sink.destination()
        assert "attempt 1/2 failed (HTTP 503)" in said and "1 waiting" in str(waiting)
        assert "s3cr3t" not in said and "127.0.0.1" in said


@pytest.mark.integration
def test_a_sink_that_is_down_costs_one_alerts_attempts_per_tick_and_every_alert_arrives_later(receiver):
    sink = AlertSinkResource(webhook_url=receiver.url, webhook_format="pagerduty", routing_key="rk-test", attempts=2, timeout_seconds=2)
    with dg.instance_for_test() as instance:
        run_watched(instance, coverage=False, drift=False)  # two incidents, two alerts
        receiver.up = False
        cursor, waiting = tick(instance, None, sink)
        # The first alert's two attempts failed; the second was not tried against a sink that is down.
        (queue,) = json.loads(cursor)["outbox"].values()  # both routes share this sink: one queue
        assert receiver.posts == 2 and len(queue) == 2 and "2 waiting" in str(waiting)
        receiver.up = True
        cursor, _ = tick(instance, cursor, sink)
        assert sorted(b["payload"]["class"] for b in receiver.bodies) == sorted(["check_feature_coverage", CHECK_FEATURE_DRIFT])
        assert json.loads(cursor)["outbox"] == {}


@pytest.mark.unit
def test_a_webhook_with_credentials_in_its_url_gets_them_as_basic_auth_and_a_closed_port_is_a_failed_delivery(receiver):
    alert = Alert("k", "trigger", "data-engineering", "error", "high", "s", "a", None, "c", 1, 2, "r", "u", 0.0)
    with_credentials = receiver.url.replace("http://", "http://oncall:s3cr3t@")
    assert AlertSinkResource(webhook_url=with_credentials).deliver(alert)
    assert receiver.authorization == "Basic " + base64.b64encode(b"oncall:s3cr3t").decode()
    with socket.socket() as probe:  # a loopback port nothing listens on: connection refused
        probe.bind(("127.0.0.1", 0))
        closed = f"http://oncall:s3cr3t@127.0.0.1:{probe.getsockname()[1]}/hook"
    messages: list[str] = []
    assert not AlertSinkResource(webhook_url=closed, attempts=1).deliver(alert, log=messages.append)
    assert "ConnectionRefusedError" in messages[0] and "s3cr3t" not in messages[0]


@pytest.mark.integration
def test_without_a_webhook_alerts_land_in_a_jsonl_file_under_dagster_home(monkeypatch):
    import os
    from pathlib import Path

    monkeypatch.delenv("FS_ONCALL_WEBHOOK_URL", raising=False)
    with dg.instance_for_test() as instance:
        run_watched(instance, coverage=False)
        tick(instance, None, AlertSinkResource())
        (line,) = (Path(os.environ["DAGSTER_HOME"]) / "alerts.jsonl").read_text().splitlines()
    alert = json.loads(line)
    assert alert["action"] == "trigger" and alert["check"] == "check_feature_coverage" and alert["route"] == "data-engineering"


DAY0 = datetime(2026, 1, 5, tzinfo=UTC)
# Enough devices that sampling noise stays well under PSI 0.1 (expected PSI of a calm day ~ 9 / n).
DEVICES = [f"dev-{i:05d}" for i in range(500)]


def day_windows(day: int, seed: int, offset: float = 0.0) -> pd.DataFrame:
    return windows_frame([(d, DAY0 + timedelta(days=day), 1440) for d in DEVICES], seed=seed, offset=offset)


@pytest.mark.integration
def test_a_shifted_day_drifts_to_the_ml_route_with_its_psi_status_and_a_chart(spark, data_root, receiver):
    history = pd.concat([day_windows(d, seed=10 + d) for d in range(3)], ignore_index=True)
    shifted = day_windows(3, seed=99, offset=25.0)
    shifted["temp_evaporator_std"] = None  # a sensor gone quiet: its nulls jump
    normal = day_windows(4, seed=77)
    for frame in (history, shifted, normal):
        write_windows(spark, frame)
    features = list(DEVICE_HEALTH_1D.features)
    delta = DeltaTables(spark=DeltaSparkResource())
    delta.overwrite(spark.createDataFrame(pd.DataFrame({"device_id": DEVICES, "status": "active"})), "device_registry")
    snapshot = ReferenceSnapshot(
        model=DEVICE_HEALTH_1D.name,
        feature_set_version="v1",
        version=1,
        created_at=datetime.now(UTC).isoformat(),
        window_minutes=1440,
        features=features,
        training_start=str(DAY0),
        training_end=str(DAY0 + timedelta(days=3)),
        rows=len(history),
        devices=len(DEVICES),
        statistics={f: feature_statistics(history[f]) for f in features},
        read_versions={},
    )
    write_snapshot(delta, snapshot)
    record_promotion(delta, Promotion(DEVICE_HEALTH_1D.name, "v1", 1, "ml-oncall", datetime.now(UTC), "", None, "test"))
    resources = {"spark": DeltaSparkResource(), "delta": DeltaTables(spark=DeltaSparkResource()), "feature_store": FeatureStoreResource()}
    sink = AlertSinkResource(webhook_url=receiver.url, webhook_format="pagerduty", routing_key="rk-test")
    with dg.instance_for_test() as instance:
        drifted = dg.materialize(
            [feature_drift_report, *drift_checks],
            partition_key=(DAY0 + timedelta(days=3)).date().isoformat(),
            resources=resources,
            instance=instance,
        )
        checks = {e.check_name: e for e in drifted.get_asset_check_evaluations()}
        assert not checks[CHECK_FEATURE_DRIFT].passed and checks[CHECK_FEATURE_DRIFT].severity == dg.AssetCheckSeverity.ERROR
        assert checks[CHECK_FEATURE_DRIFT].metadata["fleet_wide_event"].value is True
        assert "device_health_1d: temp_evaporator_mean" in checks[CHECK_FEATURE_DRIFT].metadata["features_significant"].value
        assert not checks[CHECK_NULL_FRACTION_DRIFT].passed and checks[CHECK_NULL_FRACTION_DRIFT].metadata["features"].value == [
            "device_health_1d: temp_evaporator_std"
        ]
        (event,) = drifted.get_asset_materialization_events()
        md = event.materialization.metadata
        assert md["psi_chart_device_health_1d"].value.startswith(
            "![PSI per feature of device_health_1d on 2026-01-08](data:image/png;base64,iVBOR"
        )
        assert "temp_evaporator_mean" in {r.data["feature"] for r in md["moved_features"].records} and md[
            "fleet_wide_event_days"
        ].value == ["device_health_1d 2026-01-08"]
        report = delta.read("feature_drift_monitoring/v1").toPandas().set_index("feature")
        assert report.loc["temp_evaporator_mean", "psi_status"] == "significant" and report.loc["temp_evaporator_mean", "psi"] > 0.25

        cursor, _ = tick(instance, None, sink)
        routes = {b["payload"]["class"]: (b["payload"]["group"], b["payload"]["severity"]) for b in receiver.bodies}
        assert routes == {CHECK_FEATURE_DRIFT: ("ml", "error"), CHECK_NULL_FRACTION_DRIFT: ("data-engineering", "warning")}
        assert {b["dedup_key"] for b in receiver.bodies} == {f"{c}|feature_drift_report|2026-01-08" for c in routes}

        calm = dg.materialize([feature_drift_report, *drift_checks], partition_key="2026-01-09", resources=resources, instance=instance)
        calm_checks = {e.check_name: e for e in calm.get_asset_check_evaluations()}
        assert calm_checks[CHECK_NULL_FRACTION_DRIFT].passed
        assert calm_checks[CHECK_FEATURE_DRIFT].metadata["features_significant"].value == []
        assert calm_checks[CHECK_FEATURE_DRIFT].metadata["fleet_wide_event"].value is False
        report = delta.read("feature_drift_monitoring/v1").where("report_date = '2026-01-09'").toPandas()
        assert (report["psi_status"] == "ok").mean() > 0.9


BOOKS_TO_DO = f"read the books in the check's metadata; {guide_section('Clean readings: accounting and landing columns')}"


@dg.asset(
    name="clean_sensor_readings", check_specs=[dg.AssetCheckSpec("check_accounting_identity", asset="clean_sensor_readings", blocking=True)]
)
def blocked_asset():
    yield dg.MaterializeResult()
    books = Verdict(0 if OUTCOME["coverage"] else 12, 0, "==", "rows unaccounted for", BOOKS_TO_DO)
    yield check_result(books, check_name="check_accounting_identity", severity=dg.AssetCheckSeverity.ERROR)


@dg.asset(name="device_registry")
def broken_asset():
    raise RuntimeError("landing zone unreadable")


@pytest.mark.integration
def test_a_failed_run_pages_once_unless_a_failed_check_already_says_why(receiver):
    sink = AlertSinkResource(webhook_url=receiver.url, webhook_format="pagerduty", routing_key="rk-test")
    with dg.instance_for_test() as instance:
        OUTCOME["coverage"] = False
        assert not dg.materialize([blocked_asset], instance=instance, raise_on_error=False).success
        assert not dg.materialize([broken_asset], instance=instance, raise_on_error=False).success
        tick(instance, None, sink)
        keys = sorted(b["dedup_key"] for b in receiver.bodies)
        assert keys == ["check_accounting_identity|clean_sensor_readings|-", "run_failure|__ephemeral_asset_job__[device_registry]|-"]


@dg.asset(name="device_registry")
def healthy_registry():
    return None


@dg.asset(name="maintenance_events")
def healthy_other_asset():
    return None


@pytest.mark.integration
def test_a_failed_run_is_resolved_by_its_own_assets_running_again_not_by_another_run_of_the_job(receiver):
    sink = AlertSinkResource(webhook_url=receiver.url, webhook_format="pagerduty", routing_key="rk-test")
    with dg.instance_for_test() as instance:
        assert not dg.materialize([broken_asset], instance=instance, raise_on_error=False).success
        cursor, _ = tick(instance, None, sink)
        assert dg.materialize([healthy_other_asset], instance=instance).success  # same job, other asset
        cursor, _ = tick(instance, cursor, sink)
        assert [(b["event_action"], b["dedup_key"]) for b in receiver.bodies] == [
            ("trigger", "run_failure|__ephemeral_asset_job__[device_registry]|-")
        ]
        assert dg.materialize([healthy_registry], instance=instance).success
        tick(instance, cursor, sink)
        assert [b["event_action"] for b in receiver.bodies] == ["trigger", "resolve"]
