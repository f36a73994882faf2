"""Where on-call alerts go: a webhook (Slack- or PagerDuty Events v2-compatible) or a JSON-lines file.

`FS_ONCALL_WEBHOOK_URL` set: each alert is POSTed there, in the format `FS_ONCALL_WEBHOOK_FORMAT`
(`slack`, the default, or `pagerduty`), with a timeout and retries with backoff. Unset: alerts are
appended to `$DAGSTER_HOME/alerts.jsonl`.

Each route (`data-engineering`, `ml`) can have a destination of its own: the same three settings
with the route as a suffix (`FS_ONCALL_WEBHOOK_URL_ML`, `FS_ONCALL_WEBHOOK_FORMAT_DATA_ENGINEERING`,
`FS_ONCALL_ROUTING_KEY_ML`, ...) or the resource's `routes` config. A setting a route does not
have falls back to the default sink's. A webhook URL carries its secret in its path or query
(Slack) or the payload carries a routing key (PagerDuty): neither is ever logged; what is shown is
`scheme://host`.

A delivery ends one of three ways: delivered (2xx); to retry later (the sink is down, slow, asks
to slow down with 408/429, or answers 5xx or a redirect, which is never followed: a POST turned
into a GET would be counted as delivered and would carry credentials to another host); or refused
for good (any other 4xx: the alert itself is wrong for the sink). A refused alert is set aside in a
dead-letter file so it cannot hold back the alerts behind it. Keys and texts are cut to the sink's
limits (PagerDuty: dedup key 255 characters, summary 1,024), a long key by a hash so it stays unique.
"""

from __future__ import annotations

import base64
import enum
import hashlib
import json
import os
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import asdict, dataclass
from pathlib import Path
from urllib.parse import urlsplit

import dagster as dg
from pydantic import Field

ROUTE_DATA_ENGINEERING = "data-engineering"
ROUTE_ML = "ml"
ROUTES = (ROUTE_DATA_ENGINEERING, ROUTE_ML)

# PagerDuty Events v2 limits; Slack's text is cut well below its own 40,000 characters.
MAX_DEDUP_KEY = 255
MAX_SUMMARY = 1024
# HTTP statuses that mean "not now" rather than "never": timeout and rate limit.
RETRYABLE_CLIENT_ERRORS = frozenset({408, 429})


class Outcome(enum.Enum):
    DELIVERED = "delivered"
    RETRY = "retry"
    REFUSED = "refused"


@dataclass(frozen=True)
class Delivery:
    """How one delivery ended; true only when the sink has the alert."""

    outcome: Outcome
    detail: str = ""

    def __bool__(self) -> bool:
        return self.outcome is Outcome.DELIVERED


@dataclass(frozen=True)
class Alert:
    dedup_key: str  # check | asset | partition: one incident, one notification
    action: str  # trigger | resolve
    route: str  # data-engineering | ml
    severity: str  # error | warning (resolves carry the incident's)
    urgency: str  # high | low
    summary: str
    asset: str
    partition: str | None
    check: str
    observed: object
    threshold: object
    run_id: str
    url: str
    timestamp: float

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> Alert:
        return cls(**data)


def bounded_key(key: str, limit: int = MAX_DEDUP_KEY) -> str:
    """`key` when it fits, else its start and a hash of the whole (still one key per incident)."""
    if len(key) <= limit:
        return key
    digest = hashlib.sha256(key.encode()).hexdigest()[:16]
    return f"{key[: limit - len(digest) - 1]}#{digest}"


def bounded_text(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def safe_endpoint(url: str) -> str:
    """What may be logged of a webhook URL: its scheme and host."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.hostname}" + (f":{parts.port}" if parts.port else "")


def slack_payload(alert: Alert) -> dict:
    icon = {"resolve": ":white_check_mark:", "error": ":red_circle:", "warning": ":warning:"}
    mark = icon["resolve"] if alert.action == "resolve" else icon.get(alert.severity, ":warning:")
    state = "RESOLVED" if alert.action == "resolve" else alert.severity.upper()
    return {
        "text": bounded_text(f"{mark} [{alert.route}] {state}: {alert.summary}", 3000),
        "attachments": [
            {
                "color": "#2eb67d" if alert.action == "resolve" else ("#e01e5a" if alert.severity == "error" else "#ecb22e"),
                "fields": [
                    {"title": "asset", "value": alert.asset, "short": True},
                    {"title": "partition", "value": alert.partition or "-", "short": True},
                    {"title": "check", "value": alert.check, "short": True},
                    {"title": "observed / threshold", "value": f"{alert.observed} / {alert.threshold}", "short": True},
                    {"title": "run", "value": f"<{alert.url}|{alert.run_id[:8]}>", "short": True},
                    {"title": "dedup key", "value": alert.dedup_key, "short": False},
                ],
            }
        ],
    }


def pagerduty_payload(alert: Alert, routing_key: str) -> dict:
    event = {"routing_key": routing_key, "event_action": alert.action, "dedup_key": bounded_key(alert.dedup_key)}
    if alert.action == "trigger":
        event["payload"] = {
            "summary": bounded_text(alert.summary, MAX_SUMMARY),
            "source": "device-feature-store",
            "severity": "error" if alert.severity == "error" else "warning",
            "component": alert.asset,
            "group": alert.route,
            "class": alert.check,
            "custom_details": {
                "partition": alert.partition,
                "observed": alert.observed,
                "threshold": alert.threshold,
                "run_id": alert.run_id,
                "urgency": alert.urgency,
            },
        }
        event["links"] = [{"href": alert.url, "text": "Open the run in Dagster"}]
    return event


class RouteSink(dg.Config):
    """One route's destination; an unset field reads the route's environment variable, then the default sink's."""

    webhook_url: str | None = Field(default=None, description="Webhook for this route's alerts.")
    webhook_format: str | None = Field(default=None, description="slack or pagerduty.")
    routing_key: str | None = Field(default=None, description="PagerDuty integration key for this route.")


def route_env(name: str, route: str) -> str:
    """`FS_ONCALL_WEBHOOK_URL` for route `ml` -> `FS_ONCALL_WEBHOOK_URL_ML`."""
    return f"{name}_{route.upper().replace('-', '_')}"


class AlertSinkResource(dg.ConfigurableResource):
    """Delivers alerts to each route's destination; unset fields read FS_ONCALL_WEBHOOK_URL[_<ROUTE>] /
    FS_ONCALL_WEBHOOK_FORMAT[_<ROUTE>] / FS_ONCALL_ROUTING_KEY[_<ROUTE>]."""

    webhook_url: str | None = Field(
        default=None, description="Webhook to POST alerts to; unset reads FS_ONCALL_WEBHOOK_URL, else alerts go to a JSON-lines file."
    )
    webhook_format: str | None = Field(default=None, description="slack (default) or pagerduty; unset reads FS_ONCALL_WEBHOOK_FORMAT.")
    routing_key: str | None = Field(
        default=None, description="PagerDuty integration key; unset reads FS_ONCALL_ROUTING_KEY, else the route name."
    )
    jsonl_path: str | None = Field(
        default=None, description="File alerts are appended to without a webhook; unset: $DAGSTER_HOME/alerts.jsonl."
    )
    routes: dict[str, RouteSink] = Field(
        default_factory=dict, description="Per route (data-engineering, ml): its own webhook, format and routing key."
    )
    timeout_seconds: float = Field(default=5.0, description="Seconds before one POST gives up.")
    attempts: int = Field(
        default=3, description="POSTs per alert per sensor tick (backoff doubles from 0.5 s); the rest wait for the next tick."
    )

    def _setting(self, field: str, env: str, route: str | None) -> str | None:
        """A route's own setting (config, then environment), else the default sink's."""
        if route is not None:
            own = getattr(self.routes.get(route), field, None) or os.environ.get(route_env(env, route))
            if own:
                return own
        return getattr(self, field) or os.environ.get(env) or None

    def _url(self, route: str | None = None) -> str | None:
        return self._setting("webhook_url", "FS_ONCALL_WEBHOOK_URL", route)

    def _format(self, route: str | None = None) -> str:
        chosen = (self._setting("webhook_format", "FS_ONCALL_WEBHOOK_FORMAT", route) or "slack").lower()
        if chosen not in ("slack", "pagerduty"):
            raise ValueError(f"FS_ONCALL_WEBHOOK_FORMAT{'_' + route.upper() if route else ''} must be slack or pagerduty, got {chosen!r}")
        return chosen

    def jsonl_file(self) -> Path:
        return Path(self.jsonl_path or Path(os.environ.get("DAGSTER_HOME", "dagster_home")) / "alerts.jsonl")

    def destination(self, route: str | None = None) -> str:
        """Where a route's alerts go (the default sink's when `route` is None)."""
        url = self._url(route)
        return f"{self._format(route)} webhook at {safe_endpoint(url)}" if url else f"file {self.jsonl_file()}"

    def destinations(self) -> dict[str, str]:
        return {route: self.destination(route) for route in ROUTES}

    def heartbeat_file(self) -> Path:
        return self.jsonl_file().with_name("alert_routing_heartbeat.json")

    def beat(self, at: float | None = None) -> None:
        """Record that the alert path ran (each tick of the routing sensor); atomic, so a reader
        never sees half a file."""
        path = self.heartbeat_file()
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(json.dumps({"at": time.time() if at is None else at}))
        tmp.replace(path)

    def last_beat(self) -> float | None:
        """When the alert path last ran (epoch seconds), or None if never."""
        try:
            return float(json.loads(self.heartbeat_file().read_text())["at"])
        except (FileNotFoundError, ValueError, KeyError, TypeError):
            return None

    def dead_letter_file(self) -> Path:
        return self.jsonl_file().with_name("alerts_dead_letter.jsonl")

    def dead_letter(self, record: dict, reason: str) -> Path:
        """Set aside an alert (or a stored record that is not one) the sink will never take."""
        path = self.dead_letter_file()
        _append_line(path, {"reason": reason, "set_aside_at": time.time(), "alert": record})
        return path

    def deliver(self, alert: Alert, log=None) -> Delivery:
        """Delivered once the sink has the alert; RETRY after the attempts failed (the caller keeps
        it); REFUSED at once when the sink refuses it for good (a 4xx other than 408 or 429)."""
        url = self._url(alert.route)
        if url is None:
            _append_line(self.jsonl_file(), alert.to_dict())
            return Delivery(Outcome.DELIVERED)
        if self._format(alert.route) == "pagerduty":
            body = pagerduty_payload(alert, self._setting("routing_key", "FS_ONCALL_ROUTING_KEY", alert.route) or alert.route)
        else:
            body = slack_payload(alert)
        data = json.dumps(body, default=str).encode()
        target, headers = _with_basic_auth(url)
        problem = ""
        for attempt in range(1, self.attempts + 1):
            try:
                request = urllib.request.Request(target, data=data, headers=headers, method="POST")
                with _OPENER.open(request, timeout=self.timeout_seconds) as response:
                    if 200 <= response.status < 300:
                        return Delivery(Outcome.DELIVERED)
                    problem = f"HTTP {response.status}"
            except urllib.error.HTTPError as exc:
                problem = f"HTTP {exc.code}" + (" (redirect, not followed)" if 300 <= exc.code < 400 else "")
                if 400 <= exc.code < 500 and exc.code not in RETRYABLE_CLIENT_ERRORS:
                    if log is not None:
                        log(f"alert {alert.dedup_key} refused by {safe_endpoint(url)} ({problem}): set aside, not retried")
                    return Delivery(Outcome.REFUSED, problem)
            except (urllib.error.URLError, OSError, TimeoutError) as exc:
                problem = type(getattr(exc, "reason", exc)).__name__
            if log is not None:
                log(f"alert {alert.dedup_key} to {safe_endpoint(url)}: attempt {attempt}/{self.attempts} failed ({problem})")
            if attempt < self.attempts:
                time.sleep(0.5 * 2 ** (attempt - 1))
        return Delivery(Outcome.RETRY, problem)


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    """A redirect is reported as the 3xx it is: following it would turn the POST into a body-less
    GET (counted as delivered) and could send the credentials to another host."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        return None


_OPENER = urllib.request.build_opener(_NoRedirects)


def _append_line(path: Path, record: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as sink:
        sink.write(json.dumps(record, default=str) + "\n")
        sink.flush()
        os.fsync(sink.fileno())


def _with_basic_auth(url: str) -> tuple[str, dict[str, str]]:
    """urllib does not send credentials written into a URL (user:password@host): they become a header."""
    parts = urllib.parse.urlsplit(url)
    headers = {"Content-Type": "application/json"}
    if parts.username is None and parts.password is None:
        return url, headers
    user, password = urllib.parse.unquote(parts.username or ""), urllib.parse.unquote(parts.password or "")
    headers["Authorization"] = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
    netloc = parts.hostname + (f":{parts.port}" if parts.port else "")
    return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment)), headers
