"""The paging drill: a live store on a fresh instance, a healthy phase, then one incident at a time.

    .venv/bin/python bench/oncall_drill.py                        (make drill-oncall; several hours)
    .venv/bin/python bench/oncall_drill.py --healthy-minutes 3 --page-wait-minutes 8 --resolve-wait-minutes 5
    .venv/bin/python bench/oncall_drill.py --table bench/results/oncall_drill.json --update-docs   (the table in docs/monitoring.md)

On a fresh data root and Dagster instance (`bench/fresh_instance.py`): a fleet seeded up to the
current minute (`fs-sim generate --until-now`), the embedded Redis, `fs-sim live` writing a landing
file every `--interval` seconds, and `dagster-daemon` with every sensor and schedule at its default.
Alerts go, in PagerDuty's Events v2 format, to two real HTTP receivers on 127.0.0.1, one per route
(data engineering, ML), which record every POST; the JSON-lines file and the dead-letter file under
DAGSTER_HOME are read as well. A page is a trigger of high urgency.

Once the features of the day before today exist, the drill promotes both models' reference
snapshots as an ML engineer would (`dagster asset materialize` of the training set, the snapshot
and its promotion, per model): from then on the anomaly scores of today's windows are computed as
they close, and judged, inside the healthy phase like everything else.

Phases: healthy for `--healthy-minutes` from the daemon's start (every page in it is false), then
each incident in turn: inject it, wait for the first page (at most its page wait) and a few minutes
more for any other, repair, wait for the resolves, and let the store settle before the next one.

| incident | injected by | repaired by |
|---|---|---|
| landing_stopped | stopping `fs-sim live` | starting it again (it lands the minutes it missed) |
| gateway_silent | `fs-sim live --silence <last site>` | `fs-sim live` without it |
| sensor_drift | `fs-sim live --drift <first site>:<sensor>:<per hour>` | `fs-sim live` without it |
| poison_file | a `.parquet` of today's landing folder that is not Parquet | deleting it |
| redis_down | stopping the embedded Redis | starting it |
| ml_webhook_refusing | the ML receiver answering `--ml-refusal` (a status, or closing) | answering 200 |
| features_run_killed | SIGKILL to a running features run (its process and every descendant) | nothing: the automation runs it again |

For each incident: its pages (count, dedup keys, summaries), whether the first names its cause (one
of the incident's cause words in its summary, asset or check) and carries an observed value and a
threshold; seconds from injection, from the nominal SLA breach (where the incident has one: the
clean readings' 15 minutes since the fleet's newest reading for a stopped landing zone, since the
silent site's newest for a silent gateway, the close of the first whole hour holding the drift for
a drifting sensor), and from the
evidence (the failing check evaluation or run the page names) to the first page; seconds from
repair to the resolve of each paged key. Writes `bench/results/<--results-name>.json`.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.fresh_instance import BIN, FreshInstance  # noqa: E402
from bench.results import source_state, write_results  # noqa: E402
from fs_domain.features import WINDOWS  # noqa: E402
from fs_domain.slas import CLEAN_READINGS  # noqa: E402
from fs_resources.dagster_ui import process_tree, run_worker_pid  # noqa: E402
from fs_sensors.online_store_schedules import online_store_watch_schedule  # noqa: E402

ROUTES = ("data-engineering", "ml")
POLL_SECONDS = 5
# Files that keep a record of alerts sent elsewhere (refused ones, pages about the alert path), not alerts of their own.
RECORDS_ONLY = ("dead-letter file", "alert path file")
PROGRESS_SECONDS = 300
DRIFT_SENSOR = "temp_evaporator"
FEATURE_ASSETS = tuple(w.asset_name for w in WINDOWS)
# The online store's watch ("*/15 * * * *"): Redis down is seen on its next run.
WATCH_SECONDS = int(online_store_watch_schedule.cron_schedule.split()[0].removeprefix("*/")) * 60


def now() -> float:
    return time.time()


def iso(at: float | None) -> str | None:
    return None if at is None else datetime.fromtimestamp(at, UTC).isoformat(timespec="seconds")


# ---------------------------------------------------------------------------------------------
# What arrives: two webhook receivers and the files under DAGSTER_HOME


def normalized(body: object) -> dict:
    """One alert's fields from a PagerDuty Events v2 or Slack payload, or a JSON-lines record."""
    if not isinstance(body, dict):
        return {"unreadable": str(body)[:500]}
    if "event_action" in body:
        payload = body.get("payload") or {}
        details = payload.get("custom_details") or {}
        out = {
            "dedup_key": body.get("dedup_key"),
            "action": body.get("event_action"),
            "summary": payload.get("summary"),
            "severity": payload.get("severity"),
            "asset": payload.get("component"),
            "route": payload.get("group"),
            "check": payload.get("class"),
        }
        return out | {k: v for k, v in details.items() if k not in out or out[k] is None}
    if "attachments" in body:
        fields_ = {f.get("title"): f.get("value") for a in body.get("attachments") or [] for f in a.get("fields") or []}
        observed, _, threshold = str(fields_.get("observed / threshold", "")).partition(" / ")
        text = str(body.get("text", ""))
        return {
            "dedup_key": fields_.get("dedup key"),
            "action": "resolve" if "RESOLVED" in text else "trigger",
            "summary": text,
            "asset": fields_.get("asset"),
            "partition": fields_.get("partition"),
            "check": fields_.get("check"),
            "observed": observed or None,
            "threshold": threshold or None,
        }
    return dict(body)


def is_page(alert: dict) -> bool:
    if alert.get("action") != "trigger":
        return False
    urgency = alert.get("urgency")
    return urgency == "high" if urgency is not None else alert.get("severity") in ("error", "critical")


def has_value(value: object) -> bool:
    return value is not None and str(value).strip().lower() not in ("", "none", "null", "nan", "-")


class Receiver:
    """A webhook on 127.0.0.1 that answers 200, or refuses: an HTTP status, or closing the connection."""

    def __init__(self, route: str, record: Callable[[dict], None]):
        self.route = route
        self.answer: int | str = 200
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                answer = receiver.answer
                try:
                    parsed = json.loads(body)
                except ValueError:
                    parsed = body.decode(errors="replace")
                record({"received_at": now(), "via": f"{receiver.route} webhook", "answered": answer, "body": parsed})
                if answer == "close":
                    self.close_connection = True
                    return
                self.send_response(int(answer))
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(b'{"status":"success"}' if answer == 200 else b'{"status":"refused"}')

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/{route}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class FileTail:
    """New lines of a JSON-lines file, read on each call."""

    def __init__(self, path: Path, via: str):
        self.path, self.via, self.offset = path, via, 0

    def read(self) -> list[dict]:
        if not self.path.exists():
            return []
        with self.path.open() as f:
            f.seek(self.offset)
            text = f.read()
        complete = text[: text.rfind("\n") + 1]
        self.offset += len(complete.encode())
        out = []
        for line in complete.splitlines():
            try:
                body = json.loads(line)
            except ValueError:
                body = line
            out.append({"received_at": now(), "via": self.via, "answered": None, "body": body})
        return out


@dataclass
class Inbox:
    """Every alert received, in order; `alerts()` those delivered (a refused POST is an attempt)."""

    received: list[dict] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    journal: Path | None = None

    def record(self, entry: dict) -> None:
        body = entry["body"]
        if entry["via"] in RECORDS_ONLY and isinstance(body, dict):
            body = body.get("alert", body)
        entry = entry | {"alert": normalized(body)}
        with self.lock:
            self.received.append(entry)
            if self.journal:
                with self.journal.open("a") as f:
                    f.write(json.dumps(entry, default=str) + "\n")
        alert = entry["alert"]
        state = "" if entry["answered"] in (200, None) else f" (answered {entry['answered']})"
        page = " PAGE" if is_page(alert) and entry["via"] not in RECORDS_ONLY and entry["answered"] in (200, None) else ""
        print(
            f"  {datetime.fromtimestamp(entry['received_at'], UTC):%H:%M:%S} {entry['via']}{state}{page}: {alert.get('action')} "
            f"{alert.get('dedup_key')} - {str(alert.get('summary'))[:160]}",
            flush=True,
        )

    def alerts(self, since: float = 0.0, until: float = float("inf")) -> list[dict]:
        """Alerts delivered in [since, until): answered 2xx by a receiver, or written to the alerts file."""
        with self.lock:
            return [
                e
                for e in self.received
                if since <= e["received_at"] < until and e["via"] not in RECORDS_ONLY and e["answered"] in (200, None)
            ]

    def pages(self, since: float = 0.0, until: float = float("inf")) -> list[dict]:
        return [e for e in self.alerts(since, until) if is_page(e["alert"])]

    def resolves(self, key: str, since: float) -> list[dict]:
        return [e for e in self.alerts(since) if e["alert"].get("action") == "resolve" and e["alert"].get("dedup_key") == key]


# ---------------------------------------------------------------------------------------------
# What the instance knows: runs, their processes, check evaluations


class Runs:
    def __init__(self, instance):
        import dagster as dg

        self.dg, self.instance = dg, instance

    def running_features_run(self, started_for: float = 10.0):
        """A features run STARTED at least `started_for` seconds ago, with the pid it runs as."""
        dg = self.dg
        for record in self.instance.get_run_records(filters=dg.RunsFilter(statuses=[dg.DagsterRunStatus.STARTED]), limit=20):
            run = record.dagster_run
            assets = {k.path[-1] for k in run.asset_selection or []}
            if not assets & set(FEATURE_ASSETS) or not record.start_time or now() - record.start_time < started_for:
                continue
            pid = self.pid(run.run_id)
            if pid:
                return run, pid
        return None, None

    def pid(self, run_id: str) -> int | None:
        return run_worker_pid(self.instance, run_id)

    def counts(self) -> str:
        by_status: dict[str, int] = {}
        for record in self.instance.get_run_records(limit=100_000):
            status = record.dagster_run.status.value.lower()
            by_status[status] = by_status.get(status, 0) + 1
        return ", ".join(f"{n} {status}" for status, n in sorted(by_status.items()))

    def evidence_at(self, alert: dict) -> float | None:
        """When what a page names happened: the failing evaluation of its check in its run, or the end
        of the failed run it names."""
        run_id = alert.get("run_id")
        if not run_id:
            return None
        dg = self.dg
        for record in self.instance.get_records_for_run(run_id, of_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION, limit=10_000).records:
            evaluation = record.event_log_entry.dagster_event.event_specific_data
            if evaluation.check_name == alert.get("check") and not evaluation.passed:
                return record.timestamp
        record = self.instance.get_run_record_by_id(run_id)
        if record and record.dagster_run.status == dg.DagsterRunStatus.FAILURE and record.end_time:
            return record.end_time
        return None


# ---------------------------------------------------------------------------------------------
# The drill


@dataclass
class Injection:
    name: str
    what: str
    cause_terms: tuple[str, ...]
    page_wait_minutes: float
    inject: Callable[[], dict]
    repair: Callable[[], dict]
    # The nominal SLA breach, from the injection's time and what inject() returned.
    breach: Callable[[float, dict], float | None] = lambda at, detail: None

    def named_by(self, alert: dict) -> bool:
        """Whether an alert names this incident's cause: one of its cause words in its summary, asset, check or key."""
        text = " ".join(str(alert.get(k) or "") for k in ("summary", "asset", "check", "dedup_key")).lower()
        return any(term.lower() in text for term in self.cause_terms)


class Promoter(threading.Thread):
    """Promotes every model's reference once the day before today has its features: maintenance events,
    then per model its training set, a reference snapshot and its promotion, each a `dagster asset
    materialize` run on the drill's instance (what an ML engineer starts from the UI)."""

    def __init__(self, stack: FreshInstance, instance):
        super().__init__(daemon=True, name="promoter")
        self.stack, self.instance = stack, instance
        self.promoted_at: float | None = None
        self.steps: list[dict] = []

    def features_ready(self, day: str) -> bool:
        import dagster as dg

        for name in FEATURE_ASSETS:
            found = self.instance.fetch_materializations(
                dg.AssetRecordsFilter(asset_key=dg.AssetKey(name), asset_partitions=[day]), limit=1
            ).records
            if not found:
                return False
        return True

    def materialize(self, select: str, partition: str | None = None) -> bool:
        cmd = [str(BIN / "dagster"), "asset", "materialize", "-m", "definitions", "--select", select]
        cmd += ["--partition", partition] if partition else []
        started = now()
        with open(self.stack.log("promoter"), "a") as out:
            code = subprocess.run(cmd, cwd=ROOT, env=self.stack.env, stdout=out, stderr=subprocess.STDOUT).returncode
        self.steps.append({"select": select, "partition": partition, "exit_code": code, "seconds": round(now() - started)})
        return code == 0

    def run(self) -> None:
        from fs_domain.models import MODEL_NAMES

        yesterday = (datetime.now(UTC).date() - timedelta(days=1)).isoformat()
        while not self.features_ready(yesterday):
            time.sleep(POLL_SECONDS * 6)
        ok = self.materialize("maintenance_events")
        for model in MODEL_NAMES:
            ok = ok and self.materialize("training_dataset,feature_reference_snapshot,promoted_reference", model)
        if ok:
            self.promoted_at = now()
            print(f"{iso(self.promoted_at)} references promoted: {', '.join(MODEL_NAMES)}", flush=True)
        else:
            print(f"{iso(now())} promoting the references failed: see {self.stack.log('promoter')}", flush=True)


class Drill:
    def __init__(self, args: argparse.Namespace, stack: FreshInstance, inbox: Inbox, receivers: dict[str, Receiver]):
        self.args, self.stack, self.inbox, self.receivers = args, stack, inbox, receivers
        self.tails = [
            FileTail(stack.home / "alerts.jsonl", "alerts file"),
            FileTail(stack.home / "alerts_dead_letter.jsonl", "dead-letter file"),
            FileTail(stack.home / "alert_path_down.jsonl", "alert path file"),
        ]
        self.runs: Runs | None = None
        self.sites: list[str] = []
        self.poison_file: Path | None = None
        self.promoter: Promoter | None = None
        self.current: tuple | None = None
        self.progress_at = now()

    # -- the processes

    def simulator(self, *faults: str) -> None:
        self.stack.stop("simulator")
        self.stack.start_simulator("--interval", str(self.args.interval), *faults)

    def poll(self) -> None:
        for tail in self.tails:
            for entry in tail.read():
                self.inbox.record(entry)
        for name, code in self.stack.exited().items():
            raise SystemExit(f"{name} exited with {code}; see {self.stack.log(name)}")
        if self.runs and now() - self.progress_at >= PROGRESS_SECONDS:
            self.progress_at = now()
            print(f"{iso(now())} runs: {self.runs.counts()}; {len(self.inbox.pages())} pages so far", flush=True)

    def wait(self, seconds: float, until: Callable[[], bool] = lambda: False) -> bool:
        """Poll for `seconds` or until `until()` holds; whether it held."""
        deadline = now() + seconds
        while now() < deadline:
            self.poll()
            if until():
                return True
            time.sleep(POLL_SECONDS)
        self.poll()
        return until()

    def redis_running(self) -> bool:
        from fs_resources.embedded_redis import EmbeddedRedis

        return EmbeddedRedis().is_running()

    # -- the incidents

    def injections(self) -> list[Injection]:
        args = self.args
        first_site, last_site = self.sites[0], self.sites[-1]
        landing_today = lambda: self.stack.root / "landing" / f"date={datetime.now(UTC).date().isoformat()}"  # noqa: E731

        def landed_until() -> float:
            from fs_resources.simulator.fleet import simulated_until

            until = simulated_until(str(self.stack.root))
            return until.timestamp() if until else now()

        def stop_landing() -> dict:
            self.stack.stop("simulator")
            return {"readings_end": iso(landed_until())}

        def silence() -> dict:
            first_silent = landed_until()
            self.simulator("--silence", last_site)
            return {"site": last_site, "first_silent_minute": iso(first_silent)}

        def site_late(at: float, detail: dict) -> float:
            # The site's newest reading is the minute before its first silent one; the clean
            # readings' SLA runs from it, as the landing zone's does from the fleet's newest.
            return datetime.fromisoformat(detail["first_silent_minute"]).timestamp() - 60 + CLEAN_READINGS.alert.total_seconds()

        def drift() -> dict:
            # Only scores see it: wait for the references they are measured against.
            self.wait(30 * 60, lambda: self.promoter is not None and self.promoter.promoted_at is not None)
            spec = f"{first_site}:{DRIFT_SENSOR}:{args.drift_per_hour:g}"
            self.simulator("--drift", spec)
            return {"drift": spec}

        def poison() -> dict:
            path = landing_today() / f"gateway-{datetime.now(UTC):%H%M%S}.parquet"
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".{path.name}.tmp")
            # Parquet's magic at both ends around bytes that are no footer: unreadable, not empty.
            tmp.write_bytes(b"PAR1" + os.urandom(2048) + b"\x00\x01\x00\x00PAR1")
            tmp.replace(path)
            self.poison_file = path
            return {"file": str(path.relative_to(self.stack.root))}

        def remove_poison() -> dict:
            self.poison_file.unlink(missing_ok=True)
            return {"removed": str(self.poison_file.relative_to(self.stack.root))}

        def stop_redis() -> dict:
            self.stack.redis("stop")
            return {"redis_running_after_stop": self.redis_running()}

        def start_redis() -> dict:
            self.stack.redis("start")
            return {}

        def refuse_ml() -> dict:
            self.receivers["ml"].answer = "close" if args.ml_refusal == "close" else int(args.ml_refusal)
            return {"ml_webhook_answers": args.ml_refusal}

        def accept_ml() -> dict:
            self.receivers["ml"].answer = 200
            return {}

        def kill_features_run() -> dict:
            found = {}

            def running() -> bool:
                found["run"], found["pid"] = self.runs.running_features_run()
                return found["run"] is not None

            if not self.wait(args.run_wait_minutes * 60, running):
                return {"killed": None, "note": f"no features run started within {args.run_wait_minutes:g} minutes"}
            run, pid = found["run"], found["pid"]
            tree = process_tree(pid)
            for p in tree:
                try:
                    os.kill(p, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            return {"killed": run.run_id, "assets": sorted(k.path[-1] for k in run.asset_selection), "pids": tree}

        def nothing() -> dict:
            return {}

        every = [
            Injection(
                "landing_stopped",
                "fs-sim live stopped",
                ("landing", "clean_sensor_readings", "raw_sensor_readings"),
                30,
                stop_landing,
                lambda: (self.simulator(), {})[1],
                lambda at, d: datetime.fromisoformat(d["readings_end"]).timestamp() - 60 + CLEAN_READINGS.alert.total_seconds(),
            ),
            Injection(
                "gateway_silent",
                f"the gateway of {last_site} silent",
                ("coverage", last_site, "gateway"),
                45,
                silence,
                lambda: (self.simulator(), {})[1],
                site_late,
            ),
            Injection(
                "sensor_drift",
                f"{DRIFT_SENSOR} of {first_site} drifting {args.drift_per_hour:g} per hour",
                ("drift", DRIFT_SENSOR, first_site),
                # Seen in the hourly scores: the first whole hour holding the drift closes up to two hours
                # after it began (an hour holding its first minutes only is not an anomaly to page on).
                150,
                drift,
                lambda: (self.simulator(), {})[1],
                lambda at, d: (-(-at // 3600) + 1) * 3600,
            ),
            Injection(
                "poison_file",
                "a landing file that is not Parquet",
                ("gateway-", "quarantine", "unreadable", "poison"),
                20,
                poison,
                remove_poison,
            ),
            Injection(
                "redis_down",
                "the embedded Redis stopped",
                ("redis", "online"),
                35,
                stop_redis,
                start_redis,
                # Seen by online_store_watch_schedule's lag check, every 15 minutes on the quarter hour.
                lambda at, d: (at // WATCH_SECONDS + 1) * WATCH_SECONDS,
            ),
            Injection(
                "ml_webhook_refusing",
                f"the ML webhook answering {args.ml_refusal}",
                ("webhook", "sink", "refus", "alert path"),
                30,
                refuse_ml,
                accept_ml,
            ),
            Injection(
                "features_run_killed",
                "a running features run killed (SIGKILL)",
                ("device_features", "features"),
                20,
                kill_features_run,
                nothing,
                lambda at, d: at if d.get("killed") else None,
            ),
        ]
        chosen = args.only.split(",") if args.only else [i.name for i in every]
        unknown = set(chosen) - {i.name for i in every}
        if unknown:
            raise SystemExit(f"unknown incidents {', '.join(sorted(unknown))}; choose among {', '.join(i.name for i in every)}")
        by_name = {i.name: i for i in every}
        return [by_name[name] for name in chosen]

    def run_incident(self, injection: Injection) -> dict:
        args = self.args
        print(f"\n{iso(now())} incident {injection.name}: {injection.what}", flush=True)
        started = now()
        self.current = (injection, started, None, {}, None)
        detail = injection.inject()
        injected = now()
        self.current = (injection, started, injected, detail, None)
        print(f"  injected: {detail}", flush=True)
        page_wait = (args.page_wait_minutes or injection.page_wait_minutes) * 60
        revived: dict[str, float] = {}

        def paged() -> bool:
            # Whether anything brings a stopped Redis back before the repair does.
            if injection.name == "redis_down" and not revived and self.redis_running():
                revived["at"] = now()
                print(f"{iso(now())} the embedded Redis is running again, before any repair", flush=True)
            # A page about something else (still recorded against the incident) does not end the wait.
            return any(injection.named_by(p["alert"]) for p in self.inbox.pages(started))

        if self.wait(page_wait, paged):
            self.wait(args.settle_minutes * 60, lambda: paged() and False)
        repaired_detail = injection.repair()
        repaired = now()
        detail = detail | repaired_detail
        self.current = (injection, started, injected, detail, repaired)  # a stop while waiting for resolves keeps the repair
        print(f"{iso(repaired)} repaired {injection.name} {repaired_detail or ''}", flush=True)
        keys = sorted({e["alert"].get("dedup_key") for e in self.inbox.pages(started)})
        self.wait(args.resolve_wait_minutes * 60, lambda: all(self.inbox.resolves(k, started) for k in keys) and bool(keys))
        self.wait(args.settle_minutes * 60)
        ended = now()
        self.current = None
        return self.judge(injection, started, injected, repaired, ended, detail, revived.get("at"))

    def cut_short(self) -> dict | None:
        """The incident in progress when the drill was stopped, judged as far as it went."""
        if self.current is None or self.current[2] is None:
            return None
        injection, started, injected, detail, repaired = self.current
        return self.judge(injection, started, injected, repaired, now(), detail, None) | {"cut_short": True}

    def judge(
        self,
        injection: Injection,
        started: float,
        injected: float,
        repaired: float | None,
        ended: float,
        detail: dict,
        redis_revived: float | None,
    ) -> dict:
        pages = self.inbox.pages(started, ended)
        first = pages[0] if pages else None
        breach = injection.breach(injected, detail) if detail else None
        resolves = {}
        for key in dict.fromkeys(p["alert"].get("dedup_key") for p in pages):
            found = self.inbox.resolves(key, started)
            resolves[key] = round(found[0]["received_at"] - repaired) if found and repaired else None
        evidence = self.runs.evidence_at(first["alert"]) if first else None
        return {
            "incident": injection.name,
            "what": injection.what,
            "detail": detail,
            "injected_at": iso(injected),
            "nominal_breach_at": iso(breach),
            "repaired_at": iso(repaired),
            "ended_at": iso(ended),
            "pages": len(pages),
            "page_dedup_keys": [p["alert"].get("dedup_key") for p in pages],
            "page_summaries": [p["alert"].get("summary") for p in pages],
            "first_page_names_cause": injection.named_by(first["alert"]) if first else None,
            "cause_terms": list(injection.cause_terms),
            "pages_with_value_and_threshold": sum(
                has_value(p["alert"].get("observed")) and has_value(p["alert"].get("threshold")) for p in pages
            ),
            "seconds_injection_to_first_page": round(first["received_at"] - injected) if first else None,
            "seconds_breach_to_first_page": round(first["received_at"] - breach) if first and breach else None,
            "seconds_evidence_to_first_page": round(first["received_at"] - evidence) if first and evidence else None,
            "seconds_repair_to_resolve": resolves,
            "other_alerts": len(self.inbox.alerts(started, ended)) - len(pages),
            "refused_deliveries": sum(
                1 for e in self.inbox.received if started <= e["received_at"] < ended and e["answered"] not in (200, None)
            ),
            "redis_revived_before_repair_at": iso(redis_revived),
        }


# ---------------------------------------------------------------------------------------------
# The record


def versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for package in ("dagster", "pyspark", "delta-spark", "pandas", "redis"):
        try:
            out[package] = version(package)
        except PackageNotFoundError:
            out[package] = None
    try:
        out["redis-server"] = subprocess.run(["redis-server", "--version"], capture_output=True, text=True).stdout.split()[2]
    except (OSError, IndexError):
        out["redis-server"] = None
    return out


def summary(results: dict) -> dict:
    incidents = results["incidents"]
    pages = [i["pages"] for i in incidents]
    breach = [i["seconds_breach_to_first_page"] for i in incidents if i["seconds_breach_to_first_page"] is not None]
    evidence = [i["seconds_evidence_to_first_page"] for i in incidents if i["seconds_evidence_to_first_page"] is not None]
    return {
        "false_pages": results["healthy"]["pages"],
        "incidents": len(incidents),
        "incidents_with_exactly_one_page": sum(p == 1 for p in pages),
        "incidents_with_exactly_one_page_naming_cause": sum(i["pages"] == 1 and bool(i["first_page_names_cause"]) for i in incidents),
        "incidents_without_page": sum(p == 0 for p in pages),
        "pages_without_value_or_threshold": sum(i["pages"] - i["pages_with_value_and_threshold"] for i in incidents)
        + results["healthy"]["pages"]
        - results["healthy"]["pages_with_value_and_threshold"],
        "max_seconds_breach_to_first_page": max(breach, default=None),
        "max_seconds_evidence_to_first_page": max(evidence, default=None),
        "incidents_resolved": sum(
            bool(i["seconds_repair_to_resolve"]) and all(v is not None for v in i["seconds_repair_to_resolve"].values()) for i in incidents
        ),
    }


def table(results: dict) -> str:
    """The results as a Markdown table (the one in docs/monitoring.md)."""

    def seconds(value) -> str:
        return "-" if value is None else f"{value} s"

    healthy = results["healthy"]
    rows = [
        "| phase | pages | first page | names cause | value and threshold | injection to page | SLA breach to page | evidence to page | repair to resolve |",
        "|---|---|---|---|---|---|---|---|---|",
        f"| healthy, {healthy['minutes']:g} min | {healthy['pages']} (false) | "
        + (healthy["page_summaries"][0][:90] if healthy["page_summaries"] else "-")
        + f" | | {healthy['pages_with_value_and_threshold']}/{healthy['pages']} | | | | |",
    ]
    for i in results["incidents"]:
        resolves = i["seconds_repair_to_resolve"]
        resolve = ", ".join(seconds(v) if v is not None else "none" for v in resolves.values()) if resolves else "-"
        cause = {True: "yes", False: "no", None: "-"}[i["first_page_names_cause"]]
        first = (i["page_summaries"][0] or "")[:90] if i["page_summaries"] else "-"
        rows.append(
            f"| {i['incident']} | {i['pages']} | {first} | {cause} | {i['pages_with_value_and_threshold']}/{i['pages']} | "
            f"{seconds(i['seconds_injection_to_first_page'])} | {seconds(i['seconds_breach_to_first_page'])} | "
            f"{seconds(i['seconds_evidence_to_first_page'])} | {resolve} |"
        )
    return "\n".join(rows)


DOCS_TABLE = ("<!-- oncall-drill-table -->", "<!-- /oncall-drill-table -->")
DOCS_PAGE = ROOT / "docs" / "monitoring.md"


def caption(results: dict, source: Path) -> str:
    s = summary(results)
    return (
        f"`{source.as_posix()}`: measured from {results['started_at']} to {results['ended_at']} (commit {results['commit'][:10]}, "
        f"{results['settings']['devices']} devices, a file every {results['settings']['interval']:g} s, {results['cores']} cores, "
        f"load {results['load_average_before'][0]} before and {results['load_average_after'][0]} after): "
        f"false pages: {s['false_pages']}; incidents paged exactly once, naming their cause: "
        f"{s['incidents_with_exactly_one_page_naming_cause']} of {s['incidents']}."
    )


def update_docs(parts: list[tuple[Path, dict]], page: Path = DOCS_PAGE) -> None:
    """Put each results file's caption and table (a drill run whole, or its parts) between the page's markers."""
    text = page.read_text()
    start, end = DOCS_TABLE
    if start not in text or end not in text:
        raise SystemExit(f"{page} has no {start} ... {end} block for the table")
    tables = "\n\n".join(f"{caption(results, source)}\n\n{table(results)}" for source, results in parts)
    block = f"{start}\n{tables}\n{end}"
    head, rest = text.split(start, 1)
    page.write_text(head + block + rest.split(end, 1)[1])
    print(f"wrote the table into {page}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--devices", type=int, default=50)
    parser.add_argument("--days", type=int, default=3, help="days seeded before today (today so far is seeded too)")
    parser.add_argument("--interval", type=float, default=60.0, help="seconds between landing files")
    parser.add_argument("--healthy-minutes", type=float, default=60.0)
    parser.add_argument(
        "--page-wait-minutes", type=float, default=None, help="longest wait for a page, every incident (default: each its own)"
    )
    parser.add_argument("--resolve-wait-minutes", type=float, default=45.0, help="longest wait for the resolves after a repair")
    parser.add_argument("--settle-minutes", type=float, default=5.0, help="watched after the first page, and after the resolves")
    parser.add_argument("--run-wait-minutes", type=float, default=15.0, help="longest wait for a features run to kill")
    parser.add_argument("--drift-per-hour", type=float, default=12.0, help=f"how fast {DRIFT_SENSOR} drifts (°C per hour)")
    parser.add_argument("--ml-refusal", default="503", help="what the refusing ML webhook answers: an HTTP status, or close")
    parser.add_argument(
        "--only", default=None, help="comma-separated incidents to inject, in the order given (default: all, in the table's order)"
    )
    parser.add_argument("--results-name", default="oncall_drill", help="bench/results/<name>.json")
    parser.add_argument("--work-dir", default=None, help="where data, instance and logs go (default: a temporary folder, removed after)")
    parser.add_argument(
        "--table", type=Path, nargs="+", default=None, help="print the Markdown table of results files (a run, or its parts) and exit"
    )
    parser.add_argument("--update-docs", action="store_true", help="with --table: also write them into docs/monitoring.md")
    args = parser.parse_args(argv)
    if args.table:
        parts = [(path, json.loads(path.read_text())) for path in args.table]
        for _, results in parts:
            print(table(results))
        if args.update_docs:
            update_docs(parts)
        return 0
    if args.ml_refusal != "close" and not args.ml_refusal.isdigit():
        parser.error("--ml-refusal takes an HTTP status (503, 403, ...) or close")

    results: dict = {
        **source_state(),
        "versions": versions(),
        "cores": os.cpu_count(),
        "load_average_before": [round(x, 2) for x in os.getloadavg()],
        "started_at": iso(now()),
        "settings": {k: v for k, v in vars(args).items() if k not in ("table", "update_docs", "work_dir")},
        "healthy": {},
        "incidents": [],
    }
    inbox = Inbox()
    receivers = {route: Receiver(route, inbox.record) for route in ROUTES}
    keep = args.work_dir is not None
    aborted = None
    with FreshInstance("fs-drill-", args.work_dir) as stack:
        inbox.journal = stack.work / "alerts_received.jsonl"
        drill = Drill(args, stack, inbox, receivers)
        print(f"drill under {stack.work}; alerts to {receivers['data-engineering'].url} and {receivers['ml'].url}", flush=True)
        try:
            seed = [str(BIN / "fs-sim"), "generate", "--devices", str(args.devices), "--days", str(args.days), "--until-now"]
            seeded = subprocess.run(seed, cwd=ROOT, env=stack.env, capture_output=True, text=True)
            if seeded.returncode:
                raise SystemExit(f"seeding failed: {seeded.stderr[-2000:]}")
            print(seeded.stdout.strip(), flush=True)
            from fs_resources.simulator.fleet import build_profile, load_fleet, registry_frame

            spec = load_fleet(str(stack.root))
            drill.sites = sorted(set(registry_frame(build_profile(spec), spec)["site_id"]))
            stack.redis("start")
            drill.runs = Runs(stack.dagster_instance())
            drill.simulator()
            sinks = {
                "FS_ONCALL_WEBHOOK_FORMAT": "pagerduty",
                **{f"FS_ONCALL_WEBHOOK_URL_{r.upper().replace('-', '_')}": receivers[r].url for r in ROUTES},
                **{f"FS_ONCALL_ROUTING_KEY_{r.upper().replace('-', '_')}": f"drill-{r}" for r in ROUTES},
            }
            stack.start_daemon(env=sinks)
            promoter = drill.promoter = Promoter(stack, drill.runs.instance)
            promoter.start()
            began = now()
            print(f"{iso(began)} healthy phase: {args.healthy_minutes:g} minutes", flush=True)
            drill.wait(args.healthy_minutes * 60)
            healthy_end = now()
            pages = inbox.pages(began, healthy_end)
            results["healthy"] = {
                "started_at": iso(began),
                "ended_at": iso(healthy_end),
                "minutes": round((healthy_end - began) / 60, 1),
                "pages": len(pages),
                "page_dedup_keys": [p["alert"].get("dedup_key") for p in pages],
                "page_summaries": [p["alert"].get("summary") for p in pages],
                "pages_with_value_and_threshold": sum(
                    has_value(p["alert"].get("observed")) and has_value(p["alert"].get("threshold")) for p in pages
                ),
                "other_alerts": len(inbox.alerts(began, healthy_end)) - len(pages),
                "references_promoted_at": iso(promoter.promoted_at),
                "promotion_steps": promoter.steps,
            }
            for injection in drill.injections():
                results["incidents"].append(drill.run_incident(injection))
        except (KeyboardInterrupt, SystemExit) as exc:
            aborted = f"{type(exc).__name__}: {exc}"
            print(f"drill stopped: {aborted}", flush=True)
            if (partial := drill.cut_short()) is not None:
                results["incidents"].append(partial)
        finally:
            for tail in drill.tails:
                for entry in tail.read():
                    inbox.record(entry)
            stack.stop_all()
            for receiver in receivers.values():
                receiver.close()
        results |= {"ended_at": iso(now()), "load_average_after": [round(x, 2) for x in os.getloadavg()], "aborted": aborted}
        if results["healthy"]:
            results["summary"] = summary(results)
        results["alerts"] = [e | {"received_at": iso(e["received_at"])} for e in inbox.received]
        # A drill cut short never replaces a whole one's results.
        write_results(args.results_name + ("_aborted" if aborted else ""), results)
        if results["healthy"]:
            print("\n" + table(results))
        if keep:
            print(f"data, instance and logs kept under {stack.work}")
        else:
            stack.remove()
    return 1 if aborted else 0


if __name__ == "__main__":
    sys.exit(main())
