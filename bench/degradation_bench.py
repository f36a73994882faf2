"""How early the production anomaly score flags the simulator's degrading devices, and how often it
flags healthy ones.

    nice -n 19 .venv/bin/python bench/degradation_bench.py [--devices 2000] [--days 42] [--cutoff-day 28]

A simulated fleet (`fs_resources.simulator.fleet`) with its transport faults as they are by default
(dropouts, outages, late files, duplicates, conflicting re-sends, out-of-range and non-finite values),
each site's weather wandering from day to day, and a known subset of devices degrading after the
training cut-off, in each mode: a refrigerant leak, bearing wear, a drifting sensor (each opt-in in
`FleetSpec`), and the compressor overload the simulator always had. The ground truth is
`degradation_frame`: each degrading device's mode, onset and the event that ends it.

The path is production's, without Spark: each day's readings pass the clean step's rules (readings of
unregistered devices dropped, a value outside its sensor's range or non-finite becomes NULL, the
latest delivery of a (device, minute) wins, late files included), then the production kernel
(`window_features_frame`) makes 1-hour and 1-day windows. For each model (`device_health_1d` on
1-day windows, `compressor_failure_1h` on 1-hour windows, each with its `scored_features`), the
training set's healthy windows are those that end before the cut-off with no failure within the
model's label horizon after their end, as `label_entities` labels them; on them
`fit_device_references` fits each device's own reference and `fit_reference` the fleet's, as a
reference snapshot does, and the production `score_windows` scores every window after the cut-off.

Reported per model: for each mode, the share of degrading devices with a window flagged (score above
`ANOMALY_THRESHOLD`) after the onset and at least 24 hours before the event (the failure, or the
service that recalibrates a drifting sensor), and the lead time (event minus the end of the first
flagged window after the onset; 0 for a device never flagged before its event) as median and 10th
percentile over the mode's devices; on healthy devices, the share of device-days with any window
flagged. Then the threshold SKAB's rule would choose here (the 99th percentile of healthy devices'
held-out window scores), the threshold that would hold healthy device-days to 1 %, and detection at
each. Writes `bench/results/degradation.json`.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import asdict, replace
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.results import provenance, write_results  # noqa: E402
from fs_assets.features.kernels import window_features_frame  # noqa: E402
from fs_assets.training.anomaly import fit_device_references, fit_reference, score_windows  # noqa: E402
from fs_domain.contract import SENSORS  # noqa: E402
from fs_domain.models import (  # noqa: E402
    ANOMALY_THRESHOLD,
    COMPRESSOR_FAILURE_1H,
    DEVICE_HEALTH_1D,
    SITE_EVENT_MIN_DEVICES,
    SITE_EVENT_MIN_SHARE,
    SPARSE_COMPLETENESS,
    SPARSE_READING_SHARE,
    ModelSpec,
)
from fs_resources.simulator import fleet  # noqa: E402

# The code the figures depend on: its state at the run is recorded beside them.
MEASURED_CODE = (
    "fs_assets/training/anomaly.py",
    "fs_assets/features/kernels.py",
    "fs_domain/features.py",
    "fs_domain/models.py",
    "fs_resources/simulator/fleet.py",
    "bench/degradation_bench.py",
)
MODELS = (DEVICE_HEALTH_1D, COMPRESSOR_FAILURE_1H)
MODES = (*fleet.DEGRADATION_MODES, fleet.COMPRESSOR_OVERLOAD)
START = date(2026, 3, 2)
LEAD_NEEDED = pd.Timedelta(hours=24)
THRESHOLD_QUANTILE = 0.99
# Goals the score is held to on this bench.
GOAL_DETECTED_SHARE = 0.90
GOAL_HEALTHY_DAY_SHARE = 0.01
# Devices scored per call: the scorer stacks a precision matrix per window.
SCORE_CHUNK_DEVICES = 100


def bench_spec(args: argparse.Namespace) -> fleet.FleetSpec:
    """The fleet: default transport faults, no unlabelled drift, each mode on `--share` of the devices."""
    return replace(
        fleet.FleetSpec(args.devices, START, args.days, seed=args.seed),
        drifting_share=0.0,
        degrading_share=args.share,
        leak_share=args.share,
        bearing_wear_share=args.share,
        sensor_fault_share=args.share,
        degradation_onset_after_day=float(args.cutoff_day),
        site_weather_sd=args.weather_sd,
    )


def cleaned(day: fleet.SimulatedDay, registered: set[str]) -> pd.DataFrame:
    """A day's deliveries as the clean step keeps them: registered devices only, NULL for a value out
    of its sensor's range or non-finite, the latest delivery of a (device, minute) winning."""
    frame = pd.concat([day.on_time, day.late, day.conflicts], ignore_index=True)
    frame = frame[frame["device_id"].isin(registered)]
    for sensor in SENSORS:
        values = frame[sensor.name]
        frame[sensor.name] = values.where(np.isfinite(values) & values.between(sensor.low, sensor.high))
    return frame.drop_duplicates(["device_id", "ts"], keep="last")


def featurise(spec: fleet.FleetSpec, profile: fleet.FleetProfile) -> dict[str, pd.DataFrame]:
    """Every model's windows of the whole fleet: device_id, window_start, window_end and its scored features."""
    registered = set(profile.device_ids[profile.status == "active"])
    parts: dict[str, list[pd.DataFrame]] = {m.name: [] for m in MODELS}
    began = time.monotonic()
    for day_index in range(spec.days):
        for shard in range(fleet.shard_count(profile)):
            readings = cleaned(fleet.simulate_day_with_gaps(spec, profile, day_index, shard), registered)
            for model in MODELS:
                windows = window_features_frame(readings, model.window_minutes)
                windows["window_end"] = windows["window_start"] + pd.Timedelta(minutes=model.window_minutes)
                # Sparse as the `anomaly_scores` asset marks a window's confidence reduced.
                windows["sparse"] = (windows["reading_count"] < SPARSE_READING_SHARE * model.window_minutes) | ~(
                    windows["sensor_completeness"] >= SPARSE_COMPLETENESS
                )
                parts[model.name].append(windows[["device_id", "window_start", "window_end", "sparse", *model.scored_features]])
        print(f"day {day_index + 1}/{spec.days} featurised ({time.monotonic() - began:.0f} s)", flush=True)
    return {name: pd.concat(frames, ignore_index=True) for name, frames in parts.items()}


def healthy_for_training(windows: pd.DataFrame, failures: pd.DataFrame, horizon: pd.Timedelta) -> np.ndarray:
    """Windows a training set labels 0: no failure in (window end, window end + horizon]."""
    left = windows[["device_id", "window_end"]].assign(_row=np.arange(len(windows))).sort_values("window_end", kind="stable")
    right = failures.rename(columns={"event_time": "next_failure"}).sort_values("next_failure", kind="stable")
    right["next_failure"] = right["next_failure"].astype(left["window_end"].dtype)
    joined = pd.merge_asof(
        left,
        right,
        left_on="window_end",
        right_on="next_failure",
        by="device_id",
        direction="forward",
        allow_exact_matches=False,
        tolerance=horizon,
    )
    return joined.sort_values("_row")["next_failure"].isna().to_numpy()


def scored(windows: pd.DataFrame, model: ModelSpec, fleet_reference, devices) -> pd.DataFrame:
    features = tuple(model.scored_features)
    ids = windows["device_id"].unique()
    chunks = []
    for first in range(0, len(ids), SCORE_CHUNK_DEVICES):
        part = windows[windows["device_id"].isin(ids[first : first + SCORE_CHUNK_DEVICES])]
        chunk = {d: devices[d] for d in part["device_id"].unique() if d in devices}
        chunks.append(part.join(score_windows(part, features, fleet_reference, chunk)))
    return pd.concat(chunks)


def _hours(values) -> dict:
    values = np.asarray(values, dtype=float)
    if not len(values):
        return {"median": None, "p10": None}
    return {"median": round(float(np.median(values)), 1), "p10": round(float(np.percentile(values, 10)), 1)}


def detection(scores: pd.DataFrame, truth: pd.DataFrame, threshold: float) -> dict:
    """Per mode: devices, share flagged at least 24 h before the event, lead times in hours, and the
    top feature of each device's first flagged window."""
    out = {}
    flagged = scores[scores["anomaly_score"] > threshold]
    first = flagged.merge(truth[["device_id", "onset", "event_time"]], on="device_id")
    first = first[(first["window_end"] > first["onset"]) & (first["window_end"] <= first["event_time"])]
    first = first.sort_values("window_end").drop_duplicates("device_id")
    for mode in MODES:
        devices = truth[truth["mode"] == mode]
        if devices.empty:
            continue
        hit = devices[["device_id", "event_time"]].merge(first[["device_id", "window_end", "top_feature"]], on="device_id", how="left")
        lead = ((hit["event_time"] - hit["window_end"]).dt.total_seconds() / 3600).fillna(0.0)
        early = lead >= LEAD_NEEDED.total_seconds() / 3600
        out[mode] = {
            "devices": int(len(devices)),
            "flagged_24h_before_share": round(float(early.mean()), 3),
            "flagged_before_event_share": round(float((lead > 0).mean()), 3),
            "lead_hours": _hours(lead),
            "first_flag_top_feature": hit["top_feature"].dropna().value_counts().head(3).to_dict(),
        }
        if mode == fleet.SENSOR_DRIFT:
            sensors = devices["sensor"].to_numpy()
            out[mode]["by_sensor"] = {
                sensor: {
                    "devices": int((sensors == sensor).sum()),
                    "flagged_24h_before_share": round(float(early[sensors == sensor].mean()), 3),
                }
                for sensor in sorted(set(sensors))
            }
    devices = sum(m["devices"] for m in out.values())
    early = sum(m["flagged_24h_before_share"] * m["devices"] for m in out.values())
    out["all_modes"] = {"devices": devices, "flagged_24h_before_share": round(early / devices, 3) if devices else None}
    return out


def site_events(scores: pd.DataFrame, sites: pd.Series, threshold: float) -> dict:
    """How often a site would page as a site event (`check_site_anomalies`' rule, applied to every
    window rather than the newest): at least SITE_EVENT_MIN_DEVICES of a site's scored devices, and
    SITE_EVENT_MIN_SHARE of them, beyond the threshold in one window. Degrading devices are scattered
    over the fleet, so nearly every such event here is a false page."""
    frame = scores[["device_id", "window_start"]].assign(site=scores["device_id"].map(sites), beyond=scores["anomaly_score"] > threshold)
    per_site = frame.groupby(["site", "window_start"])["beyond"].agg(["sum", "count"])
    event = (per_site["sum"] >= SITE_EVENT_MIN_DEVICES) & (per_site["sum"] >= SITE_EVENT_MIN_SHARE * per_site["count"])
    days = event.groupby([event.index.get_level_values("site"), event.index.get_level_values("window_start").floor("D")]).any()
    return {
        "site_windows": int(len(event)),
        "site_event_window_share": round(float(event.mean()), 5),
        "site_days": int(len(days)),
        "site_days_with_an_event_share": round(float(days.mean()), 4),
    }


def healthy_days(scores: pd.DataFrame, threshold: float) -> dict:
    """The share of healthy device-days with any window flagged, and of windows flagged."""
    day_max = scores.groupby(["device_id", scores["window_start"].dt.floor("D")])["anomaly_score"].max()
    return {
        "device_days": int(len(day_max)),
        "flagged_day_share": round(float((day_max > threshold).mean()), 4),
        "flagged_window_share": round(float((scores["anomaly_score"] > threshold).mean()), 4),
    }


def evaluate(
    model: ModelSpec,
    windows: pd.DataFrame,
    truth: pd.DataFrame,
    failures: pd.DataFrame,
    cutoff: pd.Timestamp,
    healthy_ids,
    sites: pd.Series,
) -> dict:
    features = tuple(model.scored_features)
    training = windows[(windows["window_end"] <= cutoff) & healthy_for_training(windows, failures, model.label_horizon)]
    began = time.monotonic()
    fleet_reference = fit_reference(training, features)
    devices = fit_device_references(training, features)
    fitted = time.monotonic() - began
    held_out = windows[windows["window_start"] >= cutoff]
    began = time.monotonic()
    scores = scored(held_out, model, fleet_reference, devices)
    scoring = time.monotonic() - began
    scores = scores[scores["anomaly_score"].notna()]
    return {
        "window_minutes": model.window_minutes,
        "label_horizon_hours": model.label_horizon.total_seconds() / 3600,
        "scored_features": list(features),
        "training_windows_healthy": int(len(training)),
        "devices_with_own_reference": len(devices),
        "fleet_reference_features": list(fleet_reference.features),
        "fit_seconds": round(fitted, 1),
        "score_seconds": round(scoring, 1),
        "windows_scored": int(len(scores)),
        "sparse_share_of_windows_scored": round(float(scores["sparse"].mean()), 4),
        "scored_against": scores["reference"].value_counts().to_dict(),
        "all_windows": judged(scores, truth, healthy_ids, sites),
        "sparse_windows_left_out": judged(scores[~scores["sparse"]], truth, healthy_ids, sites),
    }


def judged(scores: pd.DataFrame, truth: pd.DataFrame, healthy_ids, sites: pd.Series) -> dict:
    """Detection and false alerts at the store's threshold, and the thresholds two rules would choose here."""
    healthy = scores[scores["device_id"].isin(healthy_ids)]
    degrading = scores[scores["device_id"].isin(truth["device_id"])]
    before_onset = degrading.merge(truth[["device_id", "onset"]], on="device_id")
    before_onset = before_onset[before_onset["window_end"] <= before_onset["onset"]]
    # SKAB's rule: the 99th percentile of healthy windows scored out of sample.
    skab_rule = float(np.quantile(healthy["anomaly_score"], THRESHOLD_QUANTILE))
    day_max = healthy.groupby(["device_id", healthy["window_start"].dt.floor("D")])["anomaly_score"].max()
    one_pct_days = float(np.quantile(day_max, 1 - GOAL_HEALTHY_DAY_SHARE))
    at_store = detection(scores, truth, ANOMALY_THRESHOLD)
    healthy_at_store = healthy_days(healthy, ANOMALY_THRESHOLD)
    return {
        "healthy_score_quantiles": {str(q): round(float(np.quantile(healthy["anomaly_score"], q)), 3) for q in (0.5, 0.9, 0.99, 0.999)},
        "at_store_threshold": {
            "threshold": ANOMALY_THRESHOLD,
            "detection": at_store,
            "healthy": healthy_at_store,
            "degrading_devices_before_onset": healthy_days(before_onset, ANOMALY_THRESHOLD) if len(before_onset) else None,
            "site_events": site_events(scores, sites, ANOMALY_THRESHOLD),
            "goals_met": {
                "detected_24h_before_at_least_90pct": bool(at_store["all_modes"]["flagged_24h_before_share"] >= GOAL_DETECTED_SHARE),
                "healthy_days_flagged_at_most_1pct": bool(healthy_at_store["flagged_day_share"] <= GOAL_HEALTHY_DAY_SHARE),
            },
        },
        "skab_rule_threshold": {
            "rule": f"the {THRESHOLD_QUANTILE:.0%} quantile of healthy devices' window scores after the cut-off",
            "threshold": round(skab_rule, 3),
            "detection": detection(scores, truth, skab_rule),
            "healthy": healthy_days(healthy, skab_rule),
        },
        "threshold_for_1pct_healthy_days": {
            "rule": f"the {1 - GOAL_HEALTHY_DAY_SHARE:.0%} quantile of healthy devices' daily maximum score after the cut-off",
            "threshold": round(one_pct_days, 3),
            "detection": detection(scores, truth, one_pct_days),
            "healthy": healthy_days(healthy, one_pct_days),
        },
    }


def summary(run: dict) -> dict:
    """The figures a reader looks for first, from a model's full results."""

    def shares(judgement: dict) -> dict:
        return {mode: d["flagged_24h_before_share"] for mode, d in judgement["detection"].items()}

    every, dense = run["all_windows"], run["sparse_windows_left_out"]
    return {
        "at_store_threshold": {
            "flagged_24h_before_share": shares(every["at_store_threshold"]),
            "lead_hours_median": {
                m: d["lead_hours"]["median"] for m, d in every["at_store_threshold"]["detection"].items() if "lead_hours" in d
            },
            "lead_hours_p10": {m: d["lead_hours"]["p10"] for m, d in every["at_store_threshold"]["detection"].items() if "lead_hours" in d},
            "healthy_days_flagged_share": every["at_store_threshold"]["healthy"]["flagged_day_share"],
            "healthy_days_flagged_share_sparse_windows_left_out": dense["at_store_threshold"]["healthy"]["flagged_day_share"],
            "site_days_with_a_site_event_share_sparse_windows_left_out": dense["at_store_threshold"]["site_events"][
                "site_days_with_an_event_share"
            ],
            "flagged_24h_before_share_sparse_windows_left_out": shares(dense["at_store_threshold"]),
        },
        "skab_rule_threshold": every["skab_rule_threshold"]["threshold"],
        "skab_rule_threshold_healthy_days_flagged_share": every["skab_rule_threshold"]["healthy"]["flagged_day_share"],
        "threshold_for_1pct_healthy_days": every["threshold_for_1pct_healthy_days"]["threshold"],
        "threshold_for_1pct_healthy_days_sparse_windows_left_out": dense["threshold_for_1pct_healthy_days"]["threshold"],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--devices", type=int, default=2000)
    parser.add_argument("--days", type=int, default=42)
    parser.add_argument("--cutoff-day", type=int, default=28, help="references are fitted on the days before; degradations start after")
    parser.add_argument("--share", type=float, default=0.03, help="share of the devices degrading in each mode")
    parser.add_argument("--weather-sd", type=float, default=2.0, help="each site's day-to-day ambient swing (°C); 0: every day alike")
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--name", default="degradation", help="results file name under bench/results")
    args = parser.parse_args(argv)
    spec = bench_spec(args)
    began = time.monotonic()
    profile = fleet.build_profile(spec)
    start = pd.Timestamp(spec.start, tz="UTC")
    cutoff = start + pd.Timedelta(days=args.cutoff_day)
    end = start + pd.Timedelta(days=spec.days)
    truth = fleet.degradation_frame(profile, spec)
    for column in ("onset", "event_time"):
        truth[column] = pd.to_datetime(truth[column], utc=True)
    # Only degradations wholly inside the scored days are measured: a device that failed before the
    # cut-off is serviced and healthy again, one whose event falls after the last day is still degrading.
    inside = (truth["onset"] >= cutoff) & (truth["event_time"] <= end)
    measured, left_out = truth[inside], truth[~inside]
    events = fleet.maintenance_frame(profile, spec)
    failures = events[events["event_type"] == "failure"][["device_id", "event_time"]].assign(
        event_time=lambda f: pd.to_datetime(f["event_time"], utc=True)
    )
    active = profile.device_ids[profile.status == "active"]
    healthy_ids = sorted(set(active) - set(truth["device_id"]))
    sites = fleet.registry_frame(profile, spec).set_index("device_id")["site_id"]
    windows = featurise(spec, profile)
    runs = {}
    for model in MODELS:
        runs[model.name] = evaluate(model, windows[model.name], measured, failures, cutoff, healthy_ids, sites)
        for kept in ("all_windows", "sparse_windows_left_out"):
            run = runs[model.name][kept]
            at = run["at_store_threshold"]
            print(
                f"{model.name}, {kept}: flagged >= 24 h before {at['detection']['all_modes']['flagged_24h_before_share']:.1%} "
                f"({ {m: d['flagged_24h_before_share'] for m, d in at['detection'].items() if m != 'all_modes'} }), healthy days flagged "
                f"{at['healthy']['flagged_day_share']:.2%}; SKAB rule picks {run['skab_rule_threshold']['threshold']}, "
                f"1 % of healthy days needs {run['threshold_for_1pct_healthy_days']['threshold']}",
                flush=True,
            )
    fleet_fields = asdict(spec) | {"start": spec.start.isoformat()}
    results = {
        **provenance(MEASURED_CODE),
        "protocol": {
            "fleet": fleet_fields,
            "training_cutoff": cutoff.isoformat(),
            "scored_from_cutoff_to": end.isoformat(),
            "healthy_windows": "ending before the cut-off with no failure within the model's label horizon after their end",
            "references": "fit_device_references on each device's healthy windows (own reference); fit_reference on all pooled (fleet)",
            "flagged": f"anomaly_score > threshold; detected when a window ending after the onset and at least {LEAD_NEEDED} before the event is flagged",
            "lead_time": "event minus the end of the first flagged window after the onset, 0 when none before the event",
            "healthy_devices": "active devices with no degradation of any mode",
            "sparse_windows": (
                f"fewer than {SPARSE_READING_SHARE:.0%} of the window's minutes read or sensor completeness below {SPARSE_COMPLETENESS}: "
                "the windows `anomaly_scores` marks reduced_confidence as sparse; figures are given with and without them"
            ),
            "not_modelled": "the clean step's quarantine accounting (unregistered readings are dropped here, not counted)",
        },
        "devices": {
            "fleet": int(spec.devices),
            "healthy": len(healthy_ids),
            "degrading_measured": measured["mode"].value_counts().to_dict(),
            "degrading_left_out": {
                "count": int(len(left_out)),
                "why": "onset before the cut-off (the overload's failures fall anywhere in the second half) or event after the last day",
            },
        },
        "goals": {"flagged_24h_before_share_at_least": GOAL_DETECTED_SHARE, "healthy_days_flagged_at_most": GOAL_HEALTHY_DAY_SHARE},
        "summary": {name: summary(run) for name, run in runs.items()},
        "models": runs,
        "seconds": round(time.monotonic() - began),
    }
    write_results(args.name, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
