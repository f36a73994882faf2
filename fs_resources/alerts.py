"""Where on-call alerts go: a webhook (Slack- or PagerDuty Events v2-compatible) or a JSON-lines file.

`FS_ONCALL_WEBHOOK_URL` set: each alert is POSTed there, in the format `FS_ONCALL_WEBHOOK_FORMAT`
(`slack`, the default, or `pagerduty`, which needs `FS_ONCALL_ROUTING_KEY`), with a timeout and
retries with backoff. Unset: alerts are appended to `$DAGSTER_HOME/alerts.jsonl`.

Each route (`data-engineering`, `ml`) can have a destination of its own: the same three settings
with the route as a suffix (`FS_ONCALL_WEBHOOK_URL_ML`, `FS_ONCALL_WEBHOOK_FORMAT_DATA_ENGINEERING`,
`FS_ONCALL_ROUTING_KEY_ML`, ...) or the resource's `routes` config. A setting a route does not
have falls back to the default sink's. A webhook URL carries its secret in its path or query
(Slack) or the payload carries a routing key (PagerDuty): neither is ever logged; what is shown is
`scheme://host`.

The code location builds the sink with `AlertSinkResource.from_environment()`: every variable that
is set becomes a `dg.EnvVar`, which Dagster resolves when a run or tick starts (an `EnvVar` of an
unset variable fails there, so unset ones are left out). The settings are checked when the
resource is built, so a setting that cannot work (a format other than slack or pagerduty, a URL
that is not http(s), PagerDuty without its routing key) fails loading the code location
(`dagster definitions validate`) with its variable named, instead of failing every sensor tick.

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
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import dagster as dg
import tenacity
from pydantic import Field, model_validator

ROUTE_DATA_ENGINEERING = "data-engineering"
ROUTE_ML = "ml"
ROUTES = (ROUTE_DATA_ENGINEERING, ROUTE_ML)

FORMATS = ("slack", "pagerduty")
# Each setting of a sink and the environment variable it is read from; a route's own variable is
# the same name with the route as a suffix (`route_env`).
SETTING_VARIABLES = {
    "webhook_url": "FS_ONCALL_WEBHOOK_URL",
    "webhook_format": "FS_ONCALL_WEBHOOK_FORMAT",
    "routing_key": "FS_ONCALL_ROUTING_KEY",
}

# PagerDuty Events v2 limits; Slack's text is cut well below its own 40,000 characters.
MAX_DEDUP_KEY = 255
MAX_SUMMARY = 1024
# HTTP statuses that mean "not now" rather than "never": timeout and rate limit.
RETRYABLE_CLIENT_ERRORS = frozenset({408, 429})
# The dedup key of the router's probes of a PagerDuty sink: resolved, never triggered.
PROBE_KEY = "alert_path|probe"


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
    comparison: str | None = None  # passes when `observed <comparison> threshold`
    unit: str | None = None
    what_to_do: str | None = None  # one line, with its section of the operator guide
    # Failures downstream of this incident's cause, held as its context instead of paging on their own.
    attached: list[dict] = field(default_factory=list)
    duration_seconds: float | None = None  # on a resolve: how long the incident lasted

    @property
    def pages(self) -> bool:
        """Whether this alert wakes someone: a trigger at high urgency (see `urgency_for`)."""
        return self.action == "trigger" and self.urgency == "high"

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> Alert:
        return cls(**data)


def urgency_for(action: str, severity: str) -> str:
    """Only an ERROR being raised is urgent: a WARN trigger and every resolve are low urgency."""
    return "high" if action == "trigger" and severity == "error" else "low"


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
                    *_slack_context(alert),
                ],
            }
        ],
    }


def _slack_context(alert: Alert) -> list[dict]:
    """What to do, the failures attached to the incident and, on a resolve, how long it lasted."""
    fields = []
    if alert.what_to_do:
        fields.append({"title": "what to do", "value": alert.what_to_do, "short": False})
    if alert.attached:
        lines = "\n".join(f"• {a.get('summary')}" for a in alert.attached[:10])
        fields.append({"title": f"attached ({len(alert.attached)})", "value": bounded_text(lines, 1500), "short": False})
    if alert.duration_seconds is not None:
        fields.append({"title": "lasted", "value": f"{alert.duration_seconds / 60:.0f} min", "short": True})
    return fields


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
                "comparison": alert.comparison,
                "unit": alert.unit,
                "what_to_do": alert.what_to_do,
                "attached": [a.get("summary") for a in alert.attached],
                "run_id": alert.run_id,
                "urgency": alert.urgency,
            },
        }
        event["links"] = [{"href": alert.url, "text": "Open the run in Dagster"}]
    return event


class AlertSinkSettingError(Exception):
    """Sink settings that cannot work, each named by its environment variable (or config field).

    Not a ValueError on purpose: pydantic would wrap one in a ValidationError that repeats every
    input of the resource, webhook URLs and routing keys included, into the load error and its logs.
    """


class RouteSink(dg.Config):
    """One route's destination; an unset field falls back to the default sink's."""

    webhook_url: str | None = Field(
        default=None, description="Webhook for this route's alerts (http or https); from FS_ONCALL_WEBHOOK_URL_<ROUTE>."
    )
    webhook_format: str | None = Field(default=None, description="slack or pagerduty; from FS_ONCALL_WEBHOOK_FORMAT_<ROUTE>.")
    routing_key: str | None = Field(
        default=None, description="PagerDuty integration key for this route; from FS_ONCALL_ROUTING_KEY_<ROUTE>."
    )


def route_env(name: str, route: str) -> str:
    """`FS_ONCALL_WEBHOOK_URL` for route `ml` -> `FS_ONCALL_WEBHOOK_URL_ML`."""
    return f"{name}_{route.upper().replace('-', '_')}"


def _plain(value: object) -> object:
    """A setting's value: a `dg.EnvVar` read from the environment, anything else as it is.

    Dagster hands a running resource resolved values; this serves a resource used outside a run
    (and the check below, which runs while the definitions load, before Dagster resolves anything)."""
    return value.get_value() if isinstance(value, dg.EnvVar) else value


def _given(source: object, field: str, name: str) -> tuple[str | None, str]:
    """A setting as the resource was given it and the name to report it by: its environment
    variable when it came from one, else `name` (its config path)."""
    value = source.get(field) if isinstance(source, Mapping) else getattr(source, field, None)
    label = value.env_var_name if isinstance(value, dg.EnvVar) else name
    return (_plain(value) or None), label


def setting_problems(data: Mapping[str, Any]) -> list[str]:
    """What in a sink's settings (the resource's config, values or `dg.EnvVar`s) cannot work."""
    problems: list[str] = []

    def check_format(source: object, name: str) -> str | None:
        value, label = _given(source, "webhook_format", name)
        if value is not None and value.lower() not in FORMATS:
            problems.append(f"{label} must be slack or pagerduty, got {value!r}")
            return None
        return value.lower() if value else None

    def check_url(source: object, name: str) -> str | None:
        value, label = _given(source, "webhook_url", name)
        if value is not None:
            parts = urlsplit(value)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                # The scheme alone: the rest of a webhook URL is its secret.
                problems.append(f"{label} must be an http(s) URL with a host, got one with scheme {parts.scheme!r}")
        return value

    default_format = check_format(data, "webhook_format")
    default_url = check_url(data, "webhook_url")
    default_key, _ = _given(data, "routing_key", "routing_key")
    routes = data.get("routes") or {}
    for name in routes:
        if name not in ROUTES:
            problems.append(f"routes.{name}: no such route (the routes are {', '.join(ROUTES)})")
    for route in ROUTES:
        own = routes.get(route)
        own_format = check_format(own, f"routes.{route}.webhook_format") if own is not None else None
        own_url = check_url(own, f"routes.{route}.webhook_url") if own is not None else None
        own_key = _given(own, "routing_key", "")[0] if own is not None else None
        if (own_url or default_url) and (own_format or default_format) == "pagerduty" and not (own_key or default_key):
            problems.append(
                f"{route_env(SETTING_VARIABLES['routing_key'], route)} or {SETTING_VARIABLES['routing_key']} must be set: "
                f"the {route} route pages PagerDuty, which refuses every event without its integration key"
            )
    return problems


class AlertSinkResource(dg.ConfigurableResource):
    """Delivers alerts to each route's destination. The code location builds it with
    `from_environment()` (FS_ONCALL_WEBHOOK_URL[_<ROUTE>], FS_ONCALL_WEBHOOK_FORMAT[_<ROUTE>],
    FS_ONCALL_ROUTING_KEY[_<ROUTE>] as `dg.EnvVar`s); settings that cannot work fail its construction."""

    webhook_url: str | None = Field(
        default=None,
        description="Webhook (http or https) to POST alerts to; from FS_ONCALL_WEBHOOK_URL. Unset: alerts go to a JSON-lines file.",
    )
    webhook_format: str | None = Field(
        default=None, description="slack (unset) or pagerduty (Events v2, needs routing_key); from FS_ONCALL_WEBHOOK_FORMAT."
    )
    routing_key: str | None = Field(
        default=None, description="PagerDuty integration key, required with pagerduty; from FS_ONCALL_ROUTING_KEY."
    )
    jsonl_path: str | None = Field(
        default=None, description="File alerts are appended to without a webhook; unset: $DAGSTER_HOME/alerts.jsonl."
    )
    routes: dict[str, RouteSink] = Field(
        default_factory=dict,
        description=(
            "Per route (data-engineering, ml): its own webhook, format and routing key, from the same variables with the route "
            "as a suffix (FS_ONCALL_WEBHOOK_URL_ML, FS_ONCALL_ROUTING_KEY_DATA_ENGINEERING, ...); unset fields fall back to the default sink's."
        ),
    )
    timeout_seconds: float = Field(default=5.0, gt=0, description="Seconds before one POST gives up.")
    attempts: int = Field(
        default=3, ge=1, description="POSTs per alert per sensor tick (backoff doubles from 0.5 s); the rest wait for the next tick."
    )

    @model_validator(mode="before")
    @classmethod
    def _settings_that_can_work(cls, data: Any) -> Any:
        # Runs when the definitions build the resource (`dg.EnvVar`s still unresolved: read here, so a
        # bad variable fails the load) and again with Dagster's resolved values at each run or tick.
        if isinstance(data, Mapping):
            problems = setting_problems(data)
            if problems:
                raise AlertSinkSettingError("on-call alert sink settings that cannot work:\n  " + "\n  ".join(problems))
        return data

    @classmethod
    def from_environment(cls, **config: Any) -> AlertSinkResource:
        """The sink the code location runs with: each FS_ONCALL_* variable that is set (and not
        empty), as a `dg.EnvVar`; `config` given here wins over the environment, field by field."""

        def variables(route: str | None) -> dict[str, dg.EnvVar]:
            names = {field: route_env(name, route) if route else name for field, name in SETTING_VARIABLES.items()}
            return {field: dg.EnvVar(name) for field, name in names.items() if dg.EnvVar(name).get_value()}

        values: dict[str, Any] = variables(None)
        given_routes = dict(config.pop("routes", None) or {})
        routes: dict[str, RouteSink] = {}
        for route in ROUTES:
            given = given_routes.pop(route, None)
            own = variables(route) | {f: v for f in SETTING_VARIABLES if (v := getattr(given, f, None)) is not None}
            if own:
                routes[route] = RouteSink(**own)
        routes.update(given_routes)  # names that are no route: left for the settings check to name
        return cls(**(values | config | ({"routes": routes} if routes else {})))

    def _setting(self, field: str, route: str | None) -> str | None:
        """A route's own setting, else the default sink's."""
        own = _plain(getattr(self.routes.get(route), field, None)) if route is not None else None
        return own or _plain(getattr(self, field)) or None

    def _url(self, route: str | None = None) -> str | None:
        return self._setting("webhook_url", route)

    def _format(self, route: str | None = None) -> str:
        return (self._setting("webhook_format", route) or "slack").lower()

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

    def alert_path_down_file(self) -> Path:
        """Where the alert path's self-test also writes each of its pages: the place to look when no
        sink answers (operator guide, "The alert path")."""
        return self.jsonl_file().with_name("alert_path_down.jsonl")

    def record_alert_path_down(self, record: dict) -> Path:
        path = self.alert_path_down_file()
        _append_line(path, record)
        return path

    def deliver(self, alert: Alert, log=None, via: str | None = None) -> Delivery:
        """Delivered once the sink has the alert; RETRY after the attempts failed (the caller keeps
        it); REFUSED at once when the sink refuses it for good (a 4xx other than 408 or 429).

        `via` sends it through another route's sink than its own (the self-test's second path)."""
        route = via or alert.route
        url = self._url(route)
        if url is None:
            _append_line(self.jsonl_file(), alert.to_dict())
            return Delivery(Outcome.DELIVERED)
        if self._format(route) == "pagerduty":
            # The settings check made sure a PagerDuty sink has its key.
            body = pagerduty_payload(alert, self._setting("routing_key", route) or "")
        else:
            body = slack_payload(alert)
        return self._post(url, body, self.attempts, log, f"alert {alert.dedup_key}")

    def probe(self, route: str) -> Delivery | None:
        """Whether `route`'s sink takes alerts, asked with something that opens nothing: a PagerDuty
        resolve of `PROBE_KEY` (a key nothing triggers), or whether the alerts file can be opened
        for appending. None for a Slack webhook, whose every message is read by people: it is
        judged by its deliveries only. One attempt: the router asks again on its next tick."""
        url = self._url(route)
        if url is None:
            try:
                self.jsonl_file().parent.mkdir(parents=True, exist_ok=True)
                with self.jsonl_file().open("a"):
                    return Delivery(Outcome.DELIVERED)
            except OSError as exc:
                return Delivery(Outcome.RETRY, type(exc).__name__)
        if self._format(route) != "pagerduty":
            return None
        body = {"routing_key": self._setting("routing_key", route) or "", "event_action": "resolve", "dedup_key": PROBE_KEY}
        return self._post(url, body, 1, None, "probe")

    def send_first(
        self, alert: Alert, routes: tuple[str, ...], skip: frozenset[str] = frozenset(), log=None
    ) -> tuple[str | None, list[dict]]:
        """Send `alert` through the first of `routes` whose sink takes it, passing over a destination
        in `skip` or one already tried (the same sink again proves nothing). Returns the route that
        carried it (None when none did) and every attempt, each as {route, destination, outcome, detail}."""
        tried: list[dict[str, str]] = []
        for route in routes:
            destination = self.destination(route)
            if destination in skip or any(t["destination"] == destination for t in tried):
                continue
            result = self.deliver(alert, log=log, via=route)
            tried.append({"route": route, "destination": destination, "outcome": result.outcome.value, "detail": result.detail})
            if result:
                return route, tried
        return None, tried

    def _post(self, url: str, body: dict, attempts: int, log, label: str) -> Delivery:
        """POST `body`, tried again with exponential backoff while the answer may change (a network
        error, a 5xx, 408 or 429); a refusal (another 4xx) is final at once."""
        data = json.dumps(body, default=str).encode()
        target, headers = _with_basic_auth(url)

        def post() -> Delivery:
            try:
                request = urllib.request.Request(target, data=data, headers=headers, method="POST")
                with _OPENER.open(request, timeout=self.timeout_seconds) as response:
                    if 200 <= response.status < 300:
                        return Delivery(Outcome.DELIVERED)
                    return Delivery(Outcome.RETRY, f"HTTP {response.status}")
            except urllib.error.HTTPError as exc:
                problem = f"HTTP {exc.code}" + (" (redirect, not followed)" if 300 <= exc.code < 400 else "")
                if 400 <= exc.code < 500 and exc.code not in RETRYABLE_CLIENT_ERRORS:
                    if log is not None:
                        log(f"{label} refused by {safe_endpoint(url)} ({problem}): set aside, not retried")
                    return Delivery(Outcome.REFUSED, problem)
                return Delivery(Outcome.RETRY, problem)
            except (urllib.error.URLError, OSError, TimeoutError) as exc:
                return Delivery(Outcome.RETRY, type(getattr(exc, "reason", exc)).__name__)

        def after(state: tenacity.RetryCallState) -> None:
            delivery = state.outcome.result() if state.outcome else None
            if log is not None and delivery is not None and delivery.outcome is Outcome.RETRY:
                log(f"{label} to {safe_endpoint(url)}: attempt {state.attempt_number}/{attempts} failed ({delivery.detail})")

        return tenacity.Retrying(
            retry=tenacity.retry_if_result(lambda delivery: delivery.outcome is Outcome.RETRY),
            stop=tenacity.stop_after_attempt(attempts),
            wait=tenacity.wait_exponential(multiplier=0.5),
            after=after,
            retry_error_callback=lambda state: state.outcome.result(),  # the last answer, kept for the next tick
        )(post)


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
