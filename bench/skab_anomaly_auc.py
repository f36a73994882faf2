"""How well the baseline anomaly scorer separates SKAB's labelled anomalous windows from normal ones.

    .venv/bin/python bench/skab_anomaly_auc.py [--skab-dir ../shared/data/skab] [--minutes 1 5]

Each SKAB experiment (a pump run at 1 Hz) is cut into windows and featurised with the same kernel
as `device_features`; a window is anomalous when any of its readings is labelled anomalous. The
windows are scored with the production scorer (`fs_assets.monitoring.anomaly.score_windows`)
against two references built with the production statistics (`feature_statistics`):

- fleet: the anomaly-free experiment (one healthy machine standing for the fleet), every window of
  the other experiments scored;
- per device: each experiment's own windows before its first anomaly (its healthy baseline), the
  windows from the first anomaly on scored.

Prints AUC per variant and writes `bench/results/skab_auc.json`. SKAB experiments last about 20
minutes, so windows of 1 and 5 minutes are used; the fleet's daily score uses the same math on 1-day windows.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.results import write_results  # noqa: E402
from fs_assets.features.kernels import window_features_frame  # noqa: E402
from fs_assets.monitoring.anomaly import auc, score_windows  # noqa: E402
from fs_domain.models import DEVICE_HEALTH_1D  # noqa: E402

SCORED = DEVICE_HEALTH_1D.scored_features
from fs_assets.training.datasets import feature_statistics  # noqa: E402
from fs_domain.contract import SENSOR_NAMES  # noqa: E402
from fs_resources.simulator.skab import read_experiment, skab_files  # noqa: E402


def windows_of(experiment: pd.DataFrame, minutes: int) -> pd.DataFrame:
    features = window_features_frame(experiment[["device_id", "ts", *SENSOR_NAMES]], minutes)
    start = experiment["ts"].dt.tz_convert("UTC").dt.floor(f"{minutes}min").dt.tz_localize(None).astype("datetime64[us]")
    labels = experiment.assign(window_start=start).groupby("window_start")["anomaly"].max().rename("anomalous")
    starts = pd.to_datetime(features["window_start"])
    features["window_start"] = (starts.dt.tz_convert("UTC").dt.tz_localize(None) if starts.dt.tz is not None else starts).astype(
        "datetime64[us]"
    )
    return features.merge(labels.reset_index(), on="window_start", how="left")


def evaluate(experiments: dict[str, pd.DataFrame], minutes: int) -> dict:
    windows = {device: windows_of(frame, minutes) for device, frame in experiments.items()}
    healthy = windows.pop("skab-anomaly-free")
    fleet_stats = {f: feature_statistics(healthy[f]) for f in SCORED}
    fleet = pd.concat([w.join(score_windows(w, fleet_stats, SCORED)) for w in windows.values()], ignore_index=True)
    per_device = []
    for w in windows.values():
        w = w.sort_values("window_start").reset_index(drop=True)
        flagged = np.flatnonzero(w["anomalous"].to_numpy() > 0)
        if len(flagged) == 0 or flagged[0] < 3:
            continue  # no anomaly, or too short a healthy stretch to learn from
        baseline = {f: feature_statistics(w.loc[: flagged[0] - 1, f]) for f in SCORED}
        rest = w.loc[flagged[0] :]
        per_device.append(rest.join(score_windows(rest, baseline, SCORED)))
    per_device = pd.concat(per_device, ignore_index=True)

    def summary(frame: pd.DataFrame) -> dict:
        scored = frame[frame["anomaly_score"].notna()]
        y = scored["anomalous"].to_numpy() > 0
        area = auc(scored["anomaly_score"].to_numpy(), y)
        return {
            "auc": None if np.isnan(area) else round(area, 3),
            "windows": int(len(scored)),
            "anomalous_windows": int(y.sum()),
            "median_score_anomalous": _median(scored.loc[y, "anomaly_score"]),
            "median_score_normal": _median(scored.loc[~y, "anomaly_score"]),
        }

    return {"window_minutes": minutes, "fleet_reference": summary(fleet), "per_device_baseline": summary(per_device)}


def _median(values: pd.Series) -> float | None:
    return round(float(values.median()), 3) if len(values) else None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--skab-dir", default=os.environ.get("FS_SKAB_DIR", str(ROOT.parent / "shared" / "data" / "skab")))
    parser.add_argument("--minutes", type=int, nargs="+", default=[1, 5])
    args = parser.parse_args(argv)
    experiments: dict[str, pd.DataFrame] = {}
    for path in skab_files(Path(args.skab_dir)):
        frame = read_experiment(path)
        experiments[frame["device_id"].iat[0]] = frame
    results = {
        "experiments": len(experiments),
        "scored_features": list(SCORED),
        "runs": [evaluate(experiments, m) for m in args.minutes],
    }
    for run in results["runs"]:
        for variant in ("fleet_reference", "per_device_baseline"):
            r = run[variant]
            area = "n/a (one class only)" if r["auc"] is None else f"{r['auc']:.3f}"
            print(
                f"{run['window_minutes']}-minute windows, {variant.replace('_', ' ')}: AUC {area} over {r['windows']} windows ({r['anomalous_windows']} anomalous)"
            )
    write_results("skab_auc", results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
