"""Alert delivery that cannot jam: a real HTTP receiver on 127.0.0.1 answering 400, 500, a redirect
and a timeout; the real routing sensor over real runs; the alert path's own heartbeat and the
self-test's second path."""

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import dagster as dg
import pytest

from fs_checks.results import check_result
from fs_domain.verdicts import Verdict, guide_section
from fs_resources.alerts import MAX_DEDUP_KEY, Alert, AlertSinkResource, Outcome, RouteSink, bounded_key, pagerduty_payload
from fs_sensors import alert_routing_sensor as routing
from fs_sensors.alert_path_self_test import SELF_TEST_KEY, alert_path_self_test_job

pytestmark = pytest.mark.integration


class ScriptedReceiver:
    """Answers each POST by `answer(body) -> status` (a redirect points elsewhere; 0 hangs past the
    client's timeout) and records every request it sees, GETs included."""

    def __init__(self, answer):
        self.answer = answer
        self.requests: list[tuple[str, str, dict | None]] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def _record(self, body):
                receiver.requests.append((self.command, self.path, body))

            def do_GET(self):
                self._record(None)
                self.send_response(200)
                self.end_headers()

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                self._record(body)
                status = receiver.answer(body)
                if status == 0:
                    time.sleep(1.5)
                    status = 200
                self.send_response(status)
                if 300 <= status < 400:
                    self.send_header("Location", "/elsewhere")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://user:pw@127.0.0.1:{self.server.server_port}/hook"

    def posts(self) -> list[dict]:
        return [body for method, _, body in self.requests if method == "POST"]

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def scripted():
    servers = []

    def make(answer):
        servers.append(ScriptedReceiver(answer))
        return servers[-1]

    yield make
    for server in servers:
        server.close()


def _alert(key: str = "check_feature_coverage|device_features_1h|2026-01-05", summary: str = "coverage fell") -> Alert:
    return Alert(key, "trigger", "data-engineering", "error", "high", summary, "device_features_1h", "2026-01-05",
                 "check_feature_coverage", 0.9, 0.95, "run-1", "http://ui/runs/run-1", 0.0)  # fmt: skip


@pytest.mark.parametrize(
    "status, outcome, posts",
    [
        (400, Outcome.REFUSED, 1),
        (404, Outcome.REFUSED, 1),
        (500, Outcome.RETRY, 2),
        (429, Outcome.RETRY, 2),
        (307, Outcome.RETRY, 2),
        (0, Outcome.RETRY, 2),
    ],
)
def test_each_answer_of_the_sink_ends_the_delivery_the_right_way(scripted, tmp_path, status, outcome, posts):
    receiver = scripted(lambda body: status)
    sink = AlertSinkResource(webhook_url=receiver.url, attempts=2, timeout_seconds=0.5, jsonl_path=str(tmp_path / "alerts.jsonl"))
    result = sink.deliver(_alert())
    assert result.outcome is outcome and not result
    assert len(receiver.posts()) == posts
    # A redirect is not followed: no GET reaches the receiver, nothing counts as delivered.
    assert [m for m, _, _ in receiver.requests if m != "POST"] == []


def test_long_keys_and_summaries_fit_pagerduty_and_stay_unique():
    a, b = "x" * 300 + "a", "x" * 300 + "b"
    assert len(bounded_key(a)) <= MAX_DEDUP_KEY and bounded_key(a) != bounded_key(b)
    event = pagerduty_payload(_alert(key=a, summary="s" * 5000), "rk")
    assert len(event["dedup_key"]) <= 255 and len(event["payload"]["summary"]) <= 1024


# A real asset whose checks the test controls (writing the one result shape); its partition names the incident.
WHAT_TO_DO = f"see the check's evaluation; {guide_section('Reading a check failure')}"
OUTCOME = {"coverage": True, "drift": True, "crash": False}


@dg.asset(
    name="device_features_1h",
    partitions_def=dg.StaticPartitionsDefinition([f"p{i}" for i in range(8)]),
    check_specs=[
        dg.AssetCheckSpec("check_feature_coverage", asset="device_features_1h"),
        dg.AssetCheckSpec("check_feature_drift", asset="device_features_1h"),
    ],
)
def watched():
    yield dg.MaterializeResult()
    coverage = Verdict(0.99 if OUTCOME["coverage"] else 0.9, 0.95, ">=", "share of expected devices", WHAT_TO_DO)
    yield check_result(coverage, check_name="check_feature_coverage", severity=dg.AssetCheckSeverity.ERROR)
    drift = Verdict(0.02 if OUTCOME["drift"] else 0.17, 0.1, "<", "PSI", WHAT_TO_DO)
    yield check_result(drift, check_name="check_feature_drift", severity=dg.AssetCheckSeverity.WARN)
    if OUTCOME["crash"]:
        raise RuntimeError("the step crashed after its checks")


def _run(instance, partition: str, coverage: bool = True, drift: bool = True, crash: bool = False):
    OUTCOME.update(coverage=coverage, drift=drift, crash=crash)
    return dg.materialize([watched], instance=instance, partition_key=partition, raise_on_error=False)


def _tick(instance, cursor, sink):
    context = dg.build_sensor_context(instance=instance, cursor=cursor, resources={"alerts": sink})
    routing.alert_routing_sensor(context)
    return context.cursor


def test_a_refused_alert_is_set_aside_announced_and_the_rest_go_through(scripted, tmp_path):
    # The sink refuses the coverage alert for good (as PagerDuty does a malformed event) and takes the rest.
    receiver = scripted(lambda body: 400 if body["dedup_key"].startswith("check_feature_coverage") else 200)
    sink = AlertSinkResource(
        webhook_url=receiver.url, webhook_format="pagerduty", routing_key="rk-test", attempts=2, jsonl_path=str(tmp_path / "alerts.jsonl")
    )
    with dg.instance_for_test() as instance:
        _run(instance, "p0", coverage=False, drift=False)
        cursor = _tick(instance, None, sink)
        assert json.loads(cursor)["outbox"] == {}
        delivered = [b["dedup_key"] for b in receiver.posts() if not b["dedup_key"].startswith("check_feature_coverage")]
        assert "check_feature_drift|device_features_1h|-" in delivered
        assert any(k.startswith("alert_dead_letter|check_feature_coverage") for k in delivered)
        dead = [json.loads(line) for line in sink.dead_letter_file().read_text().splitlines()]
        assert [d["alert"]["check"] for d in dead] == ["check_feature_coverage"] and "HTTP 400" in dead[0]["reason"]
        # Later alerts keep flowing: the drift incident resolves.
        _run(instance, "p1")
        _tick(instance, cursor, sink)
        assert [b["event_action"] for b in receiver.posts() if b["dedup_key"] == "check_feature_drift|device_features_1h|-"] == [
            "trigger",
            "resolve",
        ]


def test_a_stored_record_that_is_not_an_alert_never_drops_the_cursor(tmp_path):
    sink = AlertSinkResource(jsonl_path=str(tmp_path / "alerts.jsonl"))
    with dg.instance_for_test() as instance:
        cursor = json.dumps({"since": 0.0, "seen": {}, "open": {}, "outbox": [{"not": "an alert"}, _alert().to_dict()]})
        cursor = _tick(instance, cursor, sink)
        assert json.loads(cursor)["outbox"] == {}
        assert [json.loads(line)["dedup_key"] for line in sink.jsonl_file().read_text().splitlines()] == [_alert().dedup_key]
        assert json.loads(sink.dead_letter_file().read_text())["alert"] == {"not": "an alert"}


def test_more_runs_than_a_page_are_all_read_in_one_tick(tmp_path, monkeypatch):
    monkeypatch.setattr(routing, "RUNS_PAGE", 2)
    sink = AlertSinkResource(jsonl_path=str(tmp_path / "alerts.jsonl"))
    with dg.instance_for_test() as instance:
        for i in range(7):
            _run(instance, f"p{i}", coverage=i % 2 == 1)  # fails, passes, fails, ...: a trigger or a resolve each
        _tick(instance, None, sink)
        actions = [json.loads(line)["action"] for line in sink.jsonl_file().read_text().splitlines()]
        assert actions == ["trigger", "resolve"] * 3 + ["trigger"]


def test_a_crashed_run_is_paged_even_when_a_warn_check_of_it_failed(tmp_path):
    sink = AlertSinkResource(jsonl_path=str(tmp_path / "alerts.jsonl"))
    with dg.instance_for_test() as instance:
        assert not _run(instance, "p0", drift=False, crash=True).success
        _tick(instance, None, sink)
        alerts = [json.loads(line) for line in sink.jsonl_file().read_text().splitlines()]
        assert {a["check"] for a in alerts} == {"run_failure", "check_feature_drift"}
        assert [a["urgency"] for a in alerts if a["check"] == "run_failure"] == ["high"]


def test_the_self_test_pages_once_when_the_alert_path_goes_quiet_and_resolves_when_it_ticks(scripted, tmp_path):
    receiver = scripted(lambda body: 200)
    sink = AlertSinkResource(
        webhook_url=receiver.url, webhook_format="pagerduty", routing_key="rk-test", jsonl_path=str(tmp_path / "alerts.jsonl")
    )
    with dg.instance_for_test() as instance:
        _tick(instance, None, sink)
        assert time.time() - sink.last_beat() < 60
        assert alert_path_self_test_job.execute_in_process(resources={"alerts": sink}, instance=instance).success
        assert receiver.posts() == []
        sink.beat(at=time.time() - 3600)
        for _ in range(2):
            assert not alert_path_self_test_job.execute_in_process(
                resources={"alerts": sink}, instance=instance, raise_on_error=False
            ).success
        assert [b["event_action"] for b in receiver.posts()] == ["trigger"] and receiver.posts()[0]["dedup_key"] == SELF_TEST_KEY
        _tick(instance, None, sink)
        assert alert_path_self_test_job.execute_in_process(resources={"alerts": sink}, instance=instance).success
        # One incident: the self-test's failed runs are not paged again as run failures.
        assert [b["event_action"] for b in receiver.posts()] == ["trigger", "resolve"]


def _stale_self_test(sink, instance):
    sink.beat(at=time.time() - 3600)
    return alert_path_self_test_job.execute_in_process(resources={"alerts": sink}, instance=instance, raise_on_error=False)


def _alert_path_down_records(sink) -> list[dict]:
    return [json.loads(line) for line in sink.alert_path_down_file().read_text().splitlines()]


def test_the_self_test_pages_through_the_ml_sink_when_the_data_engineering_sink_is_down(scripted, tmp_path):
    engineering = scripted(lambda body: 503)
    ml = scripted(lambda body: 200)
    sink = AlertSinkResource(
        attempts=1,
        jsonl_path=str(tmp_path / "alerts.jsonl"),
        routes={
            "data-engineering": RouteSink(webhook_url=engineering.url),
            "ml": RouteSink(webhook_url=ml.url, webhook_format="pagerduty", routing_key="rk-ml"),
        },
    )
    with dg.instance_for_test() as instance:
        result = _stale_self_test(sink, instance)
        assert not result.success and len(engineering.posts()) == 1
        assert [(b["event_action"], b["dedup_key"], b["routing_key"]) for b in ml.posts()] == [("trigger", SELF_TEST_KEY, "rk-ml")]
        (failure,) = [e for e in result.all_events if e.event_type == dg.DagsterEventType.STEP_FAILURE]
        carried = failure.step_failure_data.user_failure_data.metadata["carried_by"].value
        assert carried == f"pagerduty webhook at http://127.0.0.1:{ml.server.server_port}"
        (record,) = _alert_path_down_records(sink)
        assert record["carried_by"] == "ml" and [(t["route"], t["outcome"]) for t in record["tried"]] == [
            ("data-engineering", "retry"),
            ("ml", "delivered"),
        ]
        # Not paged again while the outage lasts; resolved through the path that carried the page.
        assert not _stale_self_test(sink, instance).success
        sink.beat()
        assert alert_path_self_test_job.execute_in_process(resources={"alerts": sink}, instance=instance).success
        assert [b["event_action"] for b in ml.posts()] == ["trigger", "resolve"] and len(engineering.posts()) == 1
        assert [(r["action"], r["carried_by"]) for r in _alert_path_down_records(sink)] == [("trigger", "ml"), ("resolve", "ml")]


def test_with_every_sink_down_the_page_is_on_disk_and_goes_out_once_a_sink_answers(scripted, tmp_path):
    up = {"engineering": False}
    engineering = scripted(lambda body: 200 if up["engineering"] else 503)
    ml = scripted(lambda body: 500)
    sink = AlertSinkResource(
        attempts=1,
        jsonl_path=str(tmp_path / "alerts.jsonl"),
        routes={"data-engineering": RouteSink(webhook_url=engineering.url), "ml": RouteSink(webhook_url=ml.url)},
    )
    with dg.instance_for_test() as instance:
        assert not _stale_self_test(sink, instance).success
        (record,) = _alert_path_down_records(sink)
        assert record["carried_by"] is None and record["alert"]["dedup_key"] == SELF_TEST_KEY
        assert [t["detail"] for t in record["tried"]] == ["HTTP 503", "HTTP 500"]
        up["engineering"] = True
        assert not _stale_self_test(sink, instance).success
        assert [r["carried_by"] for r in _alert_path_down_records(sink)] == [None, "data-engineering"]
        # Refused, then taken; the second path was not needed the second time.
        assert ["[data-engineering] ERROR: alert_routing_sensor" in b["text"] for b in engineering.posts()] == [True, True]
        assert len(ml.posts()) == 1


def test_two_routes_on_one_sink_are_one_path_not_two(scripted, tmp_path):
    receiver = scripted(lambda body: 503)
    sink = AlertSinkResource(webhook_url=receiver.url, attempts=1, jsonl_path=str(tmp_path / "alerts.jsonl"))
    with dg.instance_for_test() as instance:
        assert not _stale_self_test(sink, instance).success
    # Asking the same sink again through the other route proves nothing.
    assert len(receiver.posts()) == 1
    (record,) = _alert_path_down_records(sink)
    assert record["carried_by"] is None and [t["route"] for t in record["tried"]] == ["data-engineering"]
