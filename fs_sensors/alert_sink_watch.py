"""Each alert destination's health, watched by `alert_routing_sensor`: a sink that takes no alert
for `SINK_DOWN_AFTER` pages once through another path, and resolves there when it is back.

A queue per destination keeps a slow or refusing webhook from delaying the others and keeps its
alerts until it answers again (nothing is lost); this watch makes its silence heard, also when no
alert happened to be waiting for it. Every delivery the router attempts says whether its
destination takes alerts; a destination with nothing to deliver is probed every `PROBE_EVERY`
with something that opens nothing (`AlertSinkResource.probe`: a PagerDuty resolve of a key nothing
triggers, or whether the alerts file can be opened; a Slack webhook is judged by its deliveries
only), and every `RETRY_EVERY` while it fails.

A destination failing without a break for `SINK_DOWN_AFTER` pages through the first other
destination that takes it (the data-engineering route's sink, then the ML route's), and the page is
also appended to the alert-path file the operator guide's "The alert path" names. It resolves
through the path that carried it when the sink takes an alert or a probe again, saying how long it
was down.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from fs_domain.verdicts import guide_section
from fs_resources.alerts import ROUTE_DATA_ENGINEERING, ROUTE_ML, ROUTES, Alert, AlertSinkResource, Delivery, Outcome, urgency_for

CHECK_SINK_DOWN = "alert_sink_down"
SINK_DOWN_AFTER_SECONDS = 5 * 60
PROBE_EVERY_SECONDS = 5 * 60
RETRY_EVERY_SECONDS = 60
# The first path for a page about a sink, then the second.
PATHS = (ROUTE_DATA_ENGINEERING, ROUTE_ML)
GUIDE = guide_section("The alert path")


@dataclass
class Contact:
    """What one destination answered this tick: it took something (`ok`) or not, and why not."""

    ok: bool
    detail: str = ""


class SinkWatch:
    """The destinations' health, kept in the router's cursor as {destination: record}."""

    def __init__(self, records: dict[str, dict], alerts: AlertSinkResource):
        self.records = records
        self.alerts = alerts

    def routes_of(self, destination: str) -> list[str]:
        return [route for route in ROUTES if self.alerts.destination(route) == destination]

    def record(self, destination: str, contact: Contact, at: float) -> None:
        entry = self.records.setdefault(destination, {"checked_at": at})
        entry["checked_at"] = at
        if contact.ok:
            if "failing_since" in entry:  # the outage's start, for the resolve's duration
                entry["down_since"] = entry.pop("failing_since")
            entry.pop("detail", None)
        else:
            entry.setdefault("failing_since", at)
            entry["detail"] = contact.detail or "not delivered"

    def probe_idle(self, busy: set[str], at: float, log) -> None:
        """Probe each destination that had nothing to deliver this tick and is due, side by side."""
        due = []
        for destination in {self.alerts.destination(route) for route in ROUTES} - busy:
            entry = self.records.get(destination)
            if entry is None:  # first seen: nothing is known yet, and a fresh router does not probe at once
                self.records[destination] = {"checked_at": at}
                continue
            every = RETRY_EVERY_SECONDS if "failing_since" in entry else PROBE_EVERY_SECONDS
            if at - entry["checked_at"] >= every:
                due.append(destination)
        if not due:
            return

        def ask(destination: str):
            try:
                return self.alerts.probe(self.routes_of(destination)[0])
            except Exception as exc:  # its message may carry the webhook's secret: the type names it
                return _failed(f"the probe raised {type(exc).__name__}")

        with ThreadPoolExecutor(max_workers=len(due), thread_name_prefix="alert-probe") as pool:
            answers = list(pool.map(ask, due))
        for destination, answer in zip(due, answers, strict=True):
            if answer is None:  # no probe that opens nothing: judged by deliveries alone
                self.records[destination]["checked_at"] = at
                continue
            if not answer:
                log(f"alert sink {destination} did not take a probe ({answer.detail})")
            self.record(destination, Contact(bool(answer), answer.detail), at)

    def page(self, at: float, run_id: str, log) -> list[str]:
        """Page for each destination down for SINK_DOWN_AFTER and not paged yet, and resolve each
        page whose sink is back; returns one line per page or resolve sent, for the tick's summary."""
        said = []
        down = frozenset(d for d, e in self.records.items() if "failing_since" in e)
        for destination, entry in sorted(self.records.items()):
            failing_since = entry.get("failing_since")
            if failing_since is not None and "paged_via" not in entry and at - failing_since >= SINK_DOWN_AFTER_SECONDS:
                alert = self._alert("trigger", destination, entry, at, run_id)
                carried_by, tried = self.alerts.send_first(alert, PATHS, skip=down, log=log)
                # Into the alert-path file once per outage, and again when a sink carries it.
                if carried_by is not None or not entry.get("recorded"):
                    record = {"at": at, "action": "trigger", "carried_by": carried_by, "tried": tried, "alert": alert.to_dict()}
                    self.alerts.record_alert_path_down(record)
                    entry["recorded"] = True
                if carried_by is not None:
                    entry["paged_via"] = carried_by
                    said.append(f"paged that {destination} is down, through the {carried_by} route's sink")
            elif failing_since is None and "paged_via" in entry:
                alert = self._alert("resolve", destination, entry, at, run_id)
                carried_by, tried = self.alerts.send_first(alert, (entry["paged_via"],), log=log)
                record = {"at": at, "action": "resolve", "carried_by": carried_by, "tried": tried, "alert": alert.to_dict()}
                self.alerts.record_alert_path_down(record)
                if carried_by is not None:
                    del entry["paged_via"]
                    said.append(f"resolved: {destination} takes alerts again")
            if "failing_since" not in entry and "paged_via" not in entry:
                entry.pop("down_since", None)
                entry.pop("recorded", None)
        return said

    def _alert(self, action: str, destination: str, entry: dict, at: float, run_id: str) -> Alert:
        routes = " and ".join(self.routes_of(destination)) or "no"
        since = entry.get("failing_since") or entry.get("down_since") or at
        down = at - since
        if action == "trigger":
            summary = (
                f"the {routes} route's alert sink ({destination}) has taken no alert for {down / 60:.0f} min "
                f"({entry.get('detail', 'not delivered')}); its alerts wait in the router's queue"
            )
        else:
            summary = f"the {routes} route's alert sink ({destination}) takes alerts again; what waited is being delivered"
        return Alert(
            dedup_key=f"alert_path|{CHECK_SINK_DOWN}|{destination}"[:255], action=action, route=ROUTE_DATA_ENGINEERING,
            severity="error", urgency=urgency_for(action, "error"), summary=summary, asset="alert_routing_sensor",
            partition=None, check=CHECK_SINK_DOWN, observed=round(down / 60, 1), threshold=SINK_DOWN_AFTER_SECONDS / 60,
            run_id=run_id, url="", timestamp=time.time(), comparison="<", unit="minutes the sink has taken no alert",
            what_to_do=f"is the webhook up, is its key or URL right? Alerts wait and are sent when it answers; see {GUIDE}",
            duration_seconds=round(down) if action == "resolve" else None,
        )  # fmt: skip


def _failed(detail: str) -> Delivery:
    return Delivery(Outcome.RETRY, detail)
