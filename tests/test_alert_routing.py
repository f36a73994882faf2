"""The alert router on real runs: one incident per root cause (from the asset graph), one resolve
saying how long it lasted, a queue per destination, a heartbeat only for ticks that finished, and
a reader that pages on through runs it has seen.

The checks here are stubs whose outcome the test sets, but they write their results as every check
does, through `fs_checks.results.check_result`; the webhooks are real HTTP servers on 127.0.0.1."""

from __future__ import annotations

import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import dagster as dg
import pytest

from fs_checks.results import check_result
from fs_domain.verdicts import Verdict, guide_section
from fs_resources.alerts import PROBE_KEY, Alert, AlertSinkResource, RouteSink
from fs_sensors import alert_routing_sensor as routing
from fs_sensors import alert_sink_watch as sink_watch

pytestmark = pytest.mark.integration

DAY = "2026-12-06"
WHAT_TO_DO = f"see when the asset was last written and why nothing newer came; {guide_section('Reading a check failure')}"
# Each stub asset's freshness limit (minutes), as the real SLAs have them.
LIMIT = {
    "clean_sensor_readings": 15,
    "device_features_15m": 45,
    "device_features_1h": 45,
    "device_objects": 90,
    "feature_drift_report": 0.25,
}
# What the next check run observes (minutes behind) and at which severity a failure is raised.
LAG: dict[str, float] = {}
SEVERITY: dict[str, dg.AssetCheckSeverity] = {}
BROKEN: set[str] = set()


def _stub_asset(name: str, deps: list[str]):
    @dg.asset(name=name, deps=deps)
    def stub():
        if name in BROKEN:
            raise RuntimeError(f"{name}: the landing zone is unreadable")

    return stub


def _freshness_check(asset: str, name: str = "data_freshness_check", unit: str = "minutes"):
    @dg.asset_check(asset=asset, name=name)
    def check():
        verdict = Verdict(LAG.get(asset, 0), LIMIT[asset], "<=", unit, WHAT_TO_DO, partition=DAY)
        return check_result(verdict, severity=SEVERITY.get(asset, dg.AssetCheckSeverity.ERROR))

    return check


ASSETS = [
    _stub_asset("clean_sensor_readings", []),
    _stub_asset("device_features_15m", ["clean_sensor_readings"]),
    _stub_asset("device_features_1h", ["clean_sensor_readings"]),
    _stub_asset("device_objects", ["device_features_1h"]),
    _stub_asset("feature_drift_report", ["device_features_1h"]),
]
CHECKS = [_freshness_check(a) for a in LIMIT if a != "feature_drift_report"] + [
    _freshness_check("feature_drift_report", name="check_feature_drift", unit="PSI")
]
# The sensor sees the asset graph as it does in the code location.
DEFS = dg.Definitions(assets=ASSETS, asset_checks=CHECKS)


@pytest.fixture(autouse=True)
def healthy():
    LAG.clear()
    SEVERITY.clear()
    BROKEN.clear()


def judge(instance, **lags: float):
    """One run of every freshness check (as `freshness_checks_sensor` starts them), observing `lags`."""
    LAG.clear()
    LAG.update(lags)
    assert dg.materialize([*ASSETS, *CHECKS], instance=instance, selection=dg.AssetSelection.all_asset_checks()).success


def compute(instance, asset: str, **lags: float) -> bool:
    """A run that materializes `asset` and runs its checks after it, observing `lags`; False when it failed."""
    LAG.clear()
    LAG.update(lags)
    selection = dg.AssetSelection.assets(asset)
    return dg.materialize([*ASSETS, *CHECKS], instance=instance, selection=selection, raise_on_error=False).success


class Tick:
    """Ticks of the routing sensor, its cursor carried from one to the next."""

    def __init__(self, instance, sink: AlertSinkResource, graph: bool = True, defs: dg.Definitions = DEFS):
        self.instance, self.sink, self.graph, self.defs, self.cursor = instance, sink, graph, defs, None

    def __call__(self):
        context = dg.build_sensor_context(
            instance=self.instance, cursor=self.cursor, resources={"alerts": self.sink}, definitions=self.defs if self.graph else None
        )
        try:
            return routing.alert_routing_sensor(context)
        finally:
            self.cursor = context.cursor

    def failing(self) -> dict[str, dict]:
        return json.loads(self.cursor)["failing"]


def sent(sink: AlertSinkResource) -> list[Alert]:
    path = sink.jsonl_file()
    return [Alert.from_dict(json.loads(line)) for line in path.read_text().splitlines()] if path.exists() else []


def file_sink(tmp_path) -> AlertSinkResource:
    return AlertSinkResource(jsonl_path=str(tmp_path / "alerts.jsonl"))


CLEAN = "data_freshness_check|clean_sensor_readings|-"
FEATURES_1H = "data_freshness_check|device_features_1h|-"


def test_a_stalled_upstream_pages_once_its_downstream_failures_attach_and_it_resolves_once_with_its_duration(tmp_path):
    sink = file_sink(tmp_path)
    with dg.instance_for_test() as instance:
        tick = Tick(instance, sink)
        judge(instance, clean_sensor_readings=52)
        tick()
        (page,) = sent(sink)
        assert page.pages and page.dedup_key == CLEAN and page.route == "data-engineering"
        assert (
            page.summary == "data_freshness_check failed on clean_sensor_readings [2026-12-06]: observed 52 minutes, expected <= 15 minutes"
        )
        assert (page.observed, page.threshold, page.comparison, page.unit) == (52, 15, "<=", "minutes")
        assert "docs/operator_guide.md#reading-a-check-failure" in page.what_to_do and "/runs/" in page.url

        # The stall goes on: every asset it feeds falls behind too, and none of them pages.
        judge(instance, clean_sensor_readings=80, device_features_15m=60, device_features_1h=60, device_objects=120)
        tick()
        judge(instance, clean_sensor_readings=95, device_features_15m=75, device_features_1h=75, device_objects=135)
        tick()
        assert len(sent(sink)) == 1
        attached = {key: f["cause"] for key, f in tick.failing().items() if key != CLEAN}
        assert attached == {
            "data_freshness_check|device_features_15m|-": CLEAN,
            FEATURES_1H: CLEAN,
            "data_freshness_check|device_objects|-": CLEAN,
        }

        # Landing resumes: the incident resolves once, saying how long it lasted and what it explained.
        judge(instance, clean_sensor_readings=3, device_features_1h=50, device_objects=100)
        tick()
        judge(instance)
        tick()
        tick()
        first, resolve = sent(sink)
        assert resolve.action == "resolve" and resolve.dedup_key == CLEAN and not resolve.pages
        assert resolve.duration_seconds > 0 and f"after {routing.lasted(resolve.duration_seconds)}: observed 3 minutes" in resolve.summary
        assert sorted((a["asset"], a["state"]) for a in resolve.attached) == [
            ("device_features_15m", "passed"),
            ("device_features_1h", "still failing"),
            ("device_objects", "still failing"),
        ]
        # Held while the recovery flowed down, they then cleared: nothing more is sent, nothing is left open.
        assert tick.failing() == {}


def test_a_downstream_failure_with_a_healthy_upstream_pages_on_its_own_and_what_it_feeds_attaches(tmp_path):
    sink = file_sink(tmp_path)
    with dg.instance_for_test() as instance:
        tick = Tick(instance, sink)
        judge(instance, device_features_1h=60)
        tick()
        judge(instance, device_features_1h=70, device_features_15m=70, device_objects=120)
        tick()
        (page,) = sent(sink)
        assert page.pages and page.dedup_key == FEATURES_1H
        # Downstream of it (the Device object) and its sibling size (same inputs, same check) attach.
        assert {k: f["cause"] for k, f in tick.failing().items() if k != FEATURES_1H} == {
            "data_freshness_check|device_objects|-": FEATURES_1H,
            "data_freshness_check|device_features_15m|-": FEATURES_1H,
        }


def test_a_drift_failure_is_not_held_by_a_pipeline_incident_it_reaches_its_own_route(tmp_path):
    sink = file_sink(tmp_path)
    with dg.instance_for_test() as instance:
        tick = Tick(instance, sink)
        judge(instance, device_features_1h=60, feature_drift_report=1)
        tick()
        assert sorted((a.route, a.check) for a in sent(sink)) == [
            ("data-engineering", "data_freshness_check"),
            ("ml", "check_feature_drift"),
        ]


def test_a_downstream_failure_still_there_after_the_cause_recovered_opens_its_own_incident(tmp_path, monkeypatch):
    sink = file_sink(tmp_path)
    with dg.instance_for_test() as instance:
        tick = Tick(instance, sink)
        judge(instance, clean_sensor_readings=52, device_features_1h=60, device_features_15m=60, device_objects=120)
        tick()
        judge(instance, device_features_1h=60, device_features_15m=10, device_objects=120)
        tick()
        page, resolve = sent(sink)
        assert page.dedup_key == resolve.dedup_key == CLEAN and "2 attached failure(s) still failing" in resolve.summary
        assert sorted((a["asset"], a["state"]) for a in resolve.attached) == [
            ("device_features_15m", "passed"),
            ("device_features_1h", "still failing"),
            ("device_objects", "still failing"),
        ]
        # Held for the recovery to flow down: the next check runs send nothing.
        judge(instance, device_features_1h=60, device_objects=120)
        tick()
        assert len(sent(sink)) == 2
        assert {k: f["held_since"] is not None for k, f in tick.failing().items()} == {
            FEATURES_1H: True,
            "data_freshness_check|device_objects|-": True,
        }
        # Once the grace is over, the most upstream one opens its own incident; what it feeds attaches to it.
        monkeypatch.setattr(routing, "RECOVERY_GRACE", routing.timedelta(seconds=0))
        tick()
        (own,) = sent(sink)[2:]
        assert own.pages and own.dedup_key == FEATURES_1H and "after data_freshness_check on clean_sensor_readings recovered" in own.summary
        assert tick.failing()["data_freshness_check|device_objects|-"]["cause"] == FEATURES_1H
        judge(instance)
        tick()
        assert [(a.action, a.dedup_key) for a in sent(sink)[3:]] == [("resolve", FEATURES_1H)]


def test_a_failure_that_persists_after_its_asset_was_recomputed_past_the_recovery_is_its_own_at_once(tmp_path, monkeypatch):
    # The stubs stand for any check that runs with its asset here (the real data clocks never do).
    monkeypatch.setattr(routing, "CLOCK_CHECKS", frozenset())
    sink = file_sink(tmp_path)
    with dg.instance_for_test() as instance:
        tick = Tick(instance, sink)
        judge(instance, clean_sensor_readings=52, device_features_1h=60)
        tick()
        judge(instance, device_features_1h=60)
        tick()
        assert [a.action for a in sent(sink)] == ["trigger", "resolve"]
        # A check-only run changes nothing: the features are still held for the recovery to reach them.
        judge(instance, device_features_1h=61)
        tick()
        assert len(sent(sink)) == 2
        # Recomputed from the recovered readings and still behind: not the readings' doing, it pages now.
        assert compute(instance, "device_features_1h", device_features_1h=62)
        tick()
        (own,) = sent(sink)[2:]
        assert own.pages and own.dedup_key == FEATURES_1H and "after its asset was recomputed" in own.summary


def test_a_failure_that_begins_after_the_recovery_in_a_run_recomputing_its_asset_pages_as_its_own(tmp_path, monkeypatch):
    """A downstream failure first seen after its upstream's incident resolved (a killed features run, say)
    pages at once, and says it is not the recovered incident's doing."""
    monkeypatch.setattr(routing, "CLOCK_CHECKS", frozenset())
    sink = file_sink(tmp_path)
    with dg.instance_for_test() as instance:
        tick = Tick(instance, sink)
        judge(instance, clean_sensor_readings=52)
        tick()
        judge(instance, clean_sensor_readings=5)
        tick()
        assert [a.action for a in sent(sink)] == ["trigger", "resolve"]
        assert compute(instance, "device_features_1h", device_features_1h=62)
        tick()
        (own,) = sent(sink)[2:]
        assert own.pages and own.dedup_key == FEATURES_1H
        assert "a failure of its own: it began after" in own.summary and "still fails" not in own.summary


def test_a_data_clock_failing_in_a_run_that_materializes_does_not_page_and_passing_there_resolves(tmp_path):
    """A fresh store catching up writes the backlog's oldest day first: a freshness check riding along
    with that run sees thousands of minutes of lag. Only the clock's own check runs page."""
    sink = file_sink(tmp_path)
    with dg.instance_for_test() as instance:
        tick = Tick(instance, sink)
        assert compute(instance, "clean_sensor_readings", clean_sensor_readings=3000)
        tick()
        assert sent(sink) == []
        judge(instance, clean_sensor_readings=52)
        tick()
        (page,) = sent(sink)
        assert page.pages and page.dedup_key == CLEAN
        # A pass is a pass wherever it was judged: the run that brings the readings back resolves the
        # page (a live store's clean runs keep the clock fresh, so its own check run may never come).
        assert compute(instance, "clean_sensor_readings", clean_sensor_readings=2)
        tick()
        assert [(a.action, a.dedup_key) for a in sent(sink)[1:]] == [("resolve", CLEAN)]


def test_a_warn_that_becomes_an_error_pages_once_even_when_the_error_is_downstream(tmp_path):
    sink = file_sink(tmp_path)
    with dg.instance_for_test() as instance:
        tick = Tick(instance, sink)
        SEVERITY["clean_sensor_readings"] = dg.AssetCheckSeverity.WARN
        judge(instance, clean_sensor_readings=20)
        tick()
        (warn,) = sent(sink)
        assert warn.action == "trigger" and warn.severity == "warning" and not warn.pages
        judge(instance, clean_sensor_readings=40, device_features_1h=60)  # the features, at ERROR, attach and escalate it
        tick()
        SEVERITY["clean_sensor_readings"] = dg.AssetCheckSeverity.ERROR
        judge(instance, clean_sensor_readings=52, device_features_1h=70)
        tick()
        alerts = sent(sink)
        assert [(a.dedup_key, a.severity, a.pages) for a in alerts] == [(CLEAN, "warning", False), (CLEAN, "error", True)]
        assert [a["asset"] for a in alerts[1].attached] == ["device_features_1h"]


def test_a_failed_run_is_the_incident_of_its_assets_and_a_later_success_resolves_it(tmp_path):
    sink = file_sink(tmp_path)
    with dg.instance_for_test() as instance:
        tick = Tick(instance, sink)
        BROKEN.add("device_features_1h")
        assert not compute(instance, "device_features_1h")
        judge(instance, device_features_1h=60, device_objects=120)
        tick()
        (page,) = sent(sink)
        assert (
            page.pages
            and page.check == "run_failure"
            and page.dedup_key.startswith("run_failure|__ephemeral_asset_job__[device_features_1h]")
        )
        assert "the landing zone is unreadable" in page.summary and (page.observed, page.threshold) == ("FAILURE", "SUCCESS")
        assert {f["cause"] for k, f in tick.failing().items() if k != page.dedup_key} == {page.dedup_key}
        BROKEN.clear()
        assert compute(instance, "device_features_1h")
        judge(instance)
        tick()
        first, resolve = sent(sink)
        assert (resolve.action, resolve.dedup_key) == ("resolve", page.dedup_key) and resolve.duration_seconds > 0
        assert tick.failing() == {}


def test_a_failed_run_resolves_once_runs_of_other_scopes_have_computed_each_of_its_assets_again(tmp_path):
    """The automation relaunches a killed run's work in runs of its own choosing (one window size at a
    time, say): the failed run's incident resolves once every one of its assets has been computed again."""
    sink = file_sink(tmp_path)
    both = dg.AssetSelection.assets("device_features_15m", "device_features_1h")
    with dg.instance_for_test() as instance:
        tick = Tick(instance, sink)
        BROKEN.add("device_features_1h")
        assert not dg.materialize([*ASSETS, *CHECKS], instance=instance, selection=both, raise_on_error=False).success
        tick()
        (page,) = sent(sink)
        assert page.pages and page.dedup_key.startswith("run_failure|__ephemeral_asset_job__[device_features_15m,device_features_1h]")
        BROKEN.clear()
        assert compute(instance, "device_features_15m")
        tick()
        assert len(sent(sink)) == 1  # one of its two assets: still open
        assert compute(instance, "device_features_1h")
        tick()
        resolve = sent(sink)[1]
        assert (resolve.action, resolve.dedup_key) == ("resolve", page.dedup_key) and "computed again" in resolve.summary
        assert page.dedup_key not in tick.failing()


def test_a_failing_check_that_records_no_value_still_alerts_and_says_so(tmp_path):
    @dg.asset_check(asset="device_objects", name="check_without_a_verdict")
    def bare():
        return dg.AssetCheckResult(passed=False, description="projection missing")

    sink = file_sink(tmp_path)
    with dg.instance_for_test() as instance:
        assert dg.materialize([*ASSETS, bare], instance=instance, selection=dg.AssetSelection.all_asset_checks()).success
        Tick(instance, sink)()
        (alert,) = sent(sink)
        assert alert.pages and alert.observed is None and alert.threshold is None
        assert (
            alert.summary
            == "check_without_a_verdict failed on device_objects: the check recorded no value or threshold (projection missing)"
        )
        assert "docs/operator_guide.md#reading-a-check-failure" in alert.what_to_do


# Delivery: one queue per destination.


class Webhook:
    """A real webhook on 127.0.0.1: answers `status` (0: hangs `hang` seconds first) and records when each POST arrived."""

    def __init__(self, status: int = 200, hang: float = 0.0):
        self.status, self.hang = status, hang
        self.received: list[tuple[float, dict]] = []
        webhook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                if webhook.status == 0:
                    time.sleep(webhook.hang)
                    self.send_response(200)
                else:
                    if 200 <= webhook.status < 300:
                        webhook.received.append((time.monotonic(), body))
                    self.send_response(webhook.status)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_port}/hook"

    def texts(self) -> list[str]:
        return [body["text"] for _, body in self.received]

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def webhooks():
    made: list[Webhook] = []

    def make(**kwargs) -> Webhook:
        made.append(Webhook(**kwargs))
        return made[-1]

    yield make
    for webhook in made:
        webhook.close()


def _closed_port_url() -> str:
    with socket.socket() as probe:  # a loopback port nothing listens on: connection refused
        probe.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{probe.getsockname()[1]}/hook"


def _two_routes(engineering: str, ml: str, **kwargs) -> AlertSinkResource:
    return AlertSinkResource(routes={"data-engineering": RouteSink(webhook_url=engineering), "ml": RouteSink(webhook_url=ml)}, **kwargs)


def test_a_hanging_ml_webhook_does_not_delay_data_engineering_alerts(webhooks):
    engineering, ml = webhooks(), webhooks(status=0, hang=5.0)
    sink = _two_routes(engineering.url, ml.url, attempts=2, timeout_seconds=1.5)
    with dg.instance_for_test() as instance:
        tick = Tick(instance, sink, graph=False)  # no lineage: each asset is an incident of its own
        judge(instance, feature_drift_report=1)  # the ML alert is queued first
        judge(instance, feature_drift_report=1, clean_sensor_readings=52, device_features_1h=60, device_objects=120)
        started = time.monotonic()
        result = tick()
        took = time.monotonic() - started
        # The ML webhook cost its two timed-out attempts; data engineering's alerts did not wait for them.
        assert took >= 3.0 and len(engineering.received) == 3
        assert max(at for at, _ in engineering.received) - started < 1.5
        assert "1 waiting" in str(result) and list(json.loads(tick.cursor)["outbox"]) == [sink.destination("ml")]


def test_an_unreachable_or_refusing_ml_webhook_loses_nothing_and_keeps_its_order(webhooks):
    engineering, ml = webhooks(), webhooks()
    with dg.instance_for_test() as instance:
        tick = Tick(instance, _two_routes(engineering.url, _closed_port_url(), attempts=1), graph=False)
        judge(instance, feature_drift_report=1, clean_sensor_readings=52)
        tick()
        judge(instance, clean_sensor_readings=52)  # the drift passes: its resolve queues behind its trigger
        tick()
        assert len(engineering.texts()) == 1 and "[data-engineering] ERROR: data_freshness_check failed" in engineering.texts()[0]
        assert [a["action"] for q in json.loads(tick.cursor)["outbox"].values() for a in q] == ["trigger", "resolve"]
        # A webhook answering 503 keeps them too.
        tick.sink = _two_routes(engineering.url, ml.url, attempts=1)
        ml.status = 503
        tick()
        assert ml.received == [] and len(json.loads(tick.cursor)["outbox"][tick.sink.destination("ml")]) == 2
        # Back up: both arrive, in order, and data engineering heard nothing twice.
        ml.status = 200
        tick()
        assert ["[ml] ERROR" in ml.texts()[0], "[ml] RESOLVED" in ml.texts()[1]] == [True, True] and len(ml.texts()) == 2
        assert len(engineering.received) == 1 and json.loads(tick.cursor)["outbox"] == {}


def _pagerduty_routes(engineering: str, ml: str, tmp_path) -> AlertSinkResource:
    return AlertSinkResource(
        routes={"data-engineering": RouteSink(webhook_url=engineering), "ml": RouteSink(webhook_url=ml)},
        webhook_format="pagerduty", routing_key="drill", attempts=1, jsonl_path=str(tmp_path / "alerts.jsonl"),
    )  # fmt: skip


def alerts_to(webhook) -> list[dict]:
    """What a PagerDuty webhook received, its probes left out."""
    return [body for _, body in webhook.received if body["dedup_key"] != PROBE_KEY]


def test_an_idle_sink_that_stops_answering_pages_once_through_the_other_and_resolves_there(webhooks, tmp_path, monkeypatch):
    engineering, ml = webhooks(), webhooks(status=503)
    sink = _pagerduty_routes(engineering.url, ml.url, tmp_path)
    with dg.instance_for_test() as instance:
        tick = Tick(instance, sink, graph=False)
        # At the real pace nothing is probed within minutes of the last contact: a healthy store sends nothing.
        tick()
        tick()
        assert engineering.received == [] and ml.received == []
        monkeypatch.setattr(sink_watch, "PROBE_EVERY_SECONDS", 0)
        monkeypatch.setattr(sink_watch, "RETRY_EVERY_SECONDS", 0)
        tick()  # the ML sink refuses its probe: failing, not down yet
        assert alerts_to(engineering) == [] and "failing_since" in json.loads(tick.cursor)["sinks"][sink.destination("ml")]
        monkeypatch.setattr(sink_watch, "SINK_DOWN_AFTER_SECONDS", 0)
        tick()
        tick()  # still down: no second page
        pages = [body for body in alerts_to(engineering) if body["event_action"] == "trigger"]
        assert len(pages) == 1, pages
        page = pages[0]["payload"]
        assert page["class"] == "alert_sink_down" and "ml route's alert sink" in page["summary"] and "HTTP 503" in page["summary"]
        assert page["custom_details"]["observed"] is not None and page["custom_details"]["threshold"] == 0
        assert page["custom_details"]["what_to_do"] and "#the-alert-path" in page["custom_details"]["what_to_do"]
        recorded = [json.loads(line) for line in (tmp_path / "alert_path_down.jsonl").read_text().splitlines()]
        assert [(r["action"], r["carried_by"]) for r in recorded] == [("trigger", "data-engineering")]
        # Back: its probe is taken (a resolve of a key nothing triggered), and the page resolves where it was sent.
        ml.status = 200
        tick()
        assert [(b["event_action"], b["dedup_key"]) for _, b in ml.received] == [("resolve", PROBE_KEY)]
        resolves = [body for body in alerts_to(engineering) if body["event_action"] == "resolve"]
        assert len(resolves) == 1 and resolves[0]["dedup_key"] == pages[0]["dedup_key"]
        tick()
        assert len(alerts_to(engineering)) == 2 and "paged_via" not in json.loads(tick.cursor)["sinks"][sink.destination("ml")]


def test_a_slack_sink_is_never_probed(webhooks, monkeypatch):
    engineering, ml = webhooks(), webhooks()
    monkeypatch.setattr(sink_watch, "PROBE_EVERY_SECONDS", 0)
    with dg.instance_for_test() as instance:
        tick = Tick(instance, _two_routes(engineering.url, ml.url), graph=False)
        for _ in range(3):
            tick()
        assert engineering.received == [] and ml.received == []


# The heartbeat and the reader.


def test_a_tick_that_finished_beats_and_a_tick_that_failed_does_not(tmp_path):
    sink = file_sink(tmp_path)
    home = tmp_path / "home"
    home.mkdir()
    with dg.instance_for_test(temp_dir=str(home)) as instance:
        tick = Tick(instance, sink)
        judge(instance, clean_sensor_readings=52)
        tick()
        assert time.time() - sink.last_beat() < 60 and len(sent(sink)) == 1
        sink.beat(at=1000.0)
        # The run storage breaks: the tick cannot read the runs and fails, leaving the old beat.
        (home / "history" / "runs.db").write_bytes(b"not a database" * 512)
        with pytest.raises(Exception, match="not a database"):
            tick()
        assert sink.last_beat() == 1000.0


def test_the_reader_pages_on_past_a_page_of_runs_it_has_seen(tmp_path, monkeypatch):
    monkeypatch.setattr(routing, "RUNS_PAGE", 2)
    sink = file_sink(tmp_path)
    with dg.instance_for_test() as instance:
        tick = Tick(instance, sink)
        for lag in (52, 3, 52, 3):
            judge(instance, clean_sensor_readings=lag)
        tick()
        assert [a.action for a in sent(sink)] == ["trigger", "resolve"] * 2
        # The next tick's first page (within the overlap) holds only runs already seen; the new ones follow it.
        for lag in (52, 3, 52):
            judge(instance, clean_sensor_readings=lag)
        tick()
        assert [a.action for a in sent(sink)] == ["trigger", "resolve"] * 3 + ["trigger"]


# The queue.


def test_a_queue_standing_still_with_nothing_running_pages_on_its_own_and_resolves_when_a_run_starts(tmp_path, monkeypatch):
    from datetime import timedelta

    sink = file_sink(tmp_path)
    with dg.instance_for_test() as instance:
        tick = Tick(instance, sink)
        killed = _run(instance, dg.DagsterRunStatus.STARTED)
        waiting = _run(instance, dg.DagsterRunStatus.QUEUED)
        monkeypatch.setattr(routing, "QUEUE_STALLED", timedelta(0))
        tick()
        assert sent(sink) == []  # a run is running: the queue waits for it
        # Run monitoring marks the killed run failed; its pool slot is never given back, so nothing starts.
        instance.report_run_failed(killed, "the run worker's process is gone")
        tick()
        # The stall counts from when the sensor first saw it: not on this tick (the queue may be about to move).
        assert [a.check for a in sent(sink)] == ["run_failure"]
        time.sleep(0.05)
        tick()
        run_page, stall_page = sorted(sent(sink), key=lambda a: a.check)
        assert run_page.check == "run_failure" and run_page.pages
        # The stall is a cause of its own: it pages beside the failed run instead of attaching to it.
        assert stall_page.check == "run_queue_stalled" and stall_page.pages and stall_page.attached == []
        assert stall_page.run_id == waiting.run_id and f"clean_readings_job [{DAY}]" in stall_page.summary
        assert stall_page.threshold == 0 and stall_page.observed is not None and stall_page.unit == "minutes"
        assert "runs-wait-in-the-queue-with-nothing-running" in stall_page.what_to_do
        tick()
        assert len(sent(sink)) == 2  # one page per stall
        # The run starts (its slot freed): the stall resolves.
        instance.handle_run_event(waiting.run_id, _run_event(waiting, dg.DagsterEventType.RUN_START))
        tick()
        resolve = sent(sink)[-1]
        assert (resolve.action, resolve.dedup_key) == ("resolve", stall_page.dedup_key) and resolve.duration_seconds >= 0
        assert routing.QUEUE_STALLED_KEY not in tick.failing()


def test_a_queue_waiting_less_than_its_limit_does_not_page(tmp_path):
    sink = file_sink(tmp_path)
    with dg.instance_for_test() as instance:
        _run(instance, dg.DagsterRunStatus.QUEUED)
        Tick(instance, sink)()
        assert sent(sink) == []
        stall = routing.queue_stall(instance, time.time() + routing.QUEUE_STALLED.total_seconds() + 60)
        assert stall is not None and stall.waiting == 1 and stall.seconds > routing.QUEUE_STALLED.total_seconds()


def _run_event(run: dg.DagsterRun, event_type: dg.DagsterEventType):
    return dg.DagsterEvent(event_type_value=event_type.value, job_name=run.job_name)


def _run(instance, status: dg.DagsterRunStatus) -> dg.DagsterRun:
    """A run of `clean_readings_job` for DAY in `status`, as the queue or a run worker leaves it."""
    from dagster._core.remote_origin import InProcessCodeLocationOrigin, RemoteRepositoryOrigin
    from dagster._core.test_utils import create_run_for_test
    from dagster._core.types.loadable_target_origin import LoadableTargetOrigin

    location = InProcessCodeLocationOrigin(LoadableTargetOrigin(python_file=__file__), location_name="device_feature_store")
    origin = RemoteRepositoryOrigin(location, "__repository__").get_job_origin("clean_readings_job")
    return create_run_for_test(
        instance, job_name="clean_readings_job", status=status, tags={"dagster/partition": DAY}, remote_job_origin=origin
    )


# A daily asset whose check judges its newest windows, as `check_site_anomalies` judges the newest
# scores: what the next evaluation of each day observes (share of a site's devices beyond their
# normal) and whether it judged any window.
SITE: dict[str, tuple[float, bool]] = {}
SCORE_DAYS = dg.DailyPartitionsDefinition(start_date="2026-12-01")


@dg.asset(name="anomaly_scores", partitions_def=SCORE_DAYS)
def _scores():
    pass


@dg.asset_check(asset="anomaly_scores", name="check_site_anomalies", partitions_def=SCORE_DAYS)
def _site_check(context):
    share, judged_windows = SITE[context.partition_key]
    verdict = Verdict(share, 0.5, "<", "share of a site's devices", WHAT_TO_DO, judges_newest=judged_windows or None)
    return check_result(verdict, context=context)


def test_a_failure_on_the_newest_windows_resolves_on_a_later_days_pass_and_only_on_judged_windows(tmp_path):
    """A site event at 23:30 whose repair comes after midnight: its day is never judged again, so the
    next day's pass on windows it judged resolves the page; a pass that judged nothing (no window of
    the new day scored yet) does not."""
    sink = file_sink(tmp_path)
    defs = dg.Definitions(assets=[_scores], asset_checks=[_site_check])
    day, next_day = "2026-12-02", "2026-12-03"

    def judge_day(instance, day: str, share: float, judged_windows: bool = True) -> None:
        SITE[day] = (share, judged_windows)
        # The scores' run of the day and the check judging it, as the hourly scoring runs them.
        assert dg.materialize([_scores, _site_check], instance=instance, partition_key=day).success

    with dg.instance_for_test() as instance:
        tick = Tick(instance, sink, defs=defs)
        judge_day(instance, day, 1.0)
        tick()
        (page,) = sent(sink)
        assert page.pages and page.dedup_key == f"check_site_anomalies|anomaly_scores|{day}"

        judge_day(instance, next_day, 0.0, judged_windows=False)
        tick()
        assert len(sent(sink)) == 1 and page.dedup_key in tick.failing()

        judge_day(instance, next_day, 0.0)
        tick()
        resolve = sent(sink)[-1]
        assert (resolve.action, resolve.dedup_key) == ("resolve", page.dedup_key)
        assert f"passes on the newer anomaly_scores [{next_day}]" in resolve.summary and "observed 0" in resolve.summary
        assert tick.failing() == {}
