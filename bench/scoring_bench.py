"""What scoring the design fleet costs: the per-device multivariate score against the per-feature one it replaced.

    .venv/bin/python bench/scoring_bench.py [--devices 100000] [--repeats 3]

A day of the monitoring run's scoring step, for both models: 100,000 devices' 1-day windows
(`device_health_1d`) and their 24 1-hour windows each (`compressor_failure_1h`, 2.4 M windows), each
model's scored features. New: every device's own reference built from its row of
`device_reference_models` (as `read_device_references` does) and `score_windows`. Reference:
`score_windows_univariate` (robust z of each feature alone against the snapshot's statistics), on
the same windows. Each run is a
cold process (what a daemon-launched run is), old and new alternating; the windows are read from the
same Parquet files by both, and that read is timed apart. Reading the windows from Delta and writing
the scores, the rest of the run, is the same for both and not measured here.

References: 500 devices' references are fitted on 30 healthy windows each and given round-robin to
the fleet's devices (fitting 100,000 takes minutes and happens when a snapshot is written, not here);
what scoring costs depends on the number of references and rows, not on their values.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.results import write_results  # noqa: E402
from fs_assets.training.anomaly import fit_reference, score_windows, score_windows_univariate  # noqa: E402
from fs_assets.training.datasets import feature_statistics  # noqa: E402
from fs_assets.training.reference import references_from_arrow  # noqa: E402
from fs_domain.models import COMPRESSOR_FAILURE_1H, DEVICE_HEALTH_1D  # noqa: E402

MODELS = {DEVICE_HEALTH_1D.name: (DEVICE_HEALTH_1D, 1), COMPRESSOR_FAILURE_1H.name: (COMPRESSOR_FAILURE_1H, 24)}
TEMPLATES = 500


def prepare(folder: Path, devices: int) -> None:
    """Windows, references (JSON rows) and snapshot statistics of each model, under `folder`."""
    rng = np.random.default_rng(7)
    ids = np.array([f"dev-{i:06d}" for i in range(devices)], dtype=object)
    for name, (model, per_device) in MODELS.items():
        features = list(model.scored_features)
        k = len(features)
        mixing = rng.normal(size=(k, k)) / np.sqrt(k)
        healthy = rng.normal(size=(TEMPLATES * 30, k)) @ mixing
        templates = [fit_reference(pd.DataFrame(healthy[i * 30 : (i + 1) * 30], columns=features), features) for i in range(TEMPLATES)]
        # The rows of `device_reference_models`, as `fitted_device_references` writes them.
        given = [templates[i % TEMPLATES] for i in range(devices)]
        pd.DataFrame(
            {
                "device_id": ids,
                "windows": [r.windows for r in given],
                "features": [list(r.features) for r in given],
                "centre": [r.centre.tolist() for r in given],
                "scale": [r.scale.tolist() for r in given],
                "precision": [r.precision.ravel().tolist() for r in given],
                "calibration": [float(r.calibration) for r in given],
                "shrinkage": [float(r.shrinkage) for r in given],
            }
        ).to_parquet(folder / f"{name}_references.parquet")
        values = rng.normal(size=(devices * per_device, k)) @ mixing
        windows = pd.DataFrame(values, columns=features)
        windows.insert(0, "device_id", np.repeat(ids, per_device))
        windows.to_parquet(folder / f"{name}_windows.parquet")
        stats = {f: feature_statistics(pd.Series(healthy[:, i])) for i, f in enumerate(features)}
        (folder / f"{name}_statistics.json").write_text(json.dumps(stats))


def run_once(folder: Path, scorer: str) -> dict:
    """One cold run of a scorer over both models: seconds per step and the process's peak memory."""
    out: dict = {"scorer": scorer, "read_windows_seconds": 0.0, "read_references_seconds": 0.0, "score_seconds": 0.0, "windows": 0}
    for name, (model, _) in MODELS.items():
        started = time.perf_counter()
        windows = pd.read_parquet(folder / f"{name}_windows.parquet")
        out["read_windows_seconds"] += time.perf_counter() - started
        out["windows"] += len(windows)
        features = tuple(model.scored_features)
        started = time.perf_counter()
        if scorer == "multivariate":
            # As read_device_references builds them from the table's Arrow rows.
            devices = references_from_arrow(pq.read_table(folder / f"{name}_references.parquet"))
            fleet = next(iter(devices.values()))
            out["read_references_seconds"] += time.perf_counter() - started
            started = time.perf_counter()
            scored = score_windows(windows, features, fleet, devices)
        else:
            stats = json.loads((folder / f"{name}_statistics.json").read_text())
            out["read_references_seconds"] += time.perf_counter() - started
            started = time.perf_counter()
            scored = score_windows_univariate(windows, stats, features)
        out["score_seconds"] += time.perf_counter() - started
        assert scored["anomaly_score"].notna().all()
    out["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    out["seconds"] = out["read_references_seconds"] + out["score_seconds"]
    return {k: round(v, 2) if isinstance(v, float) else v for k, v in out.items()}


def summary(runs: list[dict]) -> dict:
    seconds = [r["seconds"] for r in runs]
    return {
        "seconds_median": round(statistics.median(seconds), 2),
        "seconds_max": max(seconds),
        "score_seconds_median": round(statistics.median(r["score_seconds"] for r in runs), 2),
        "read_references_seconds_median": round(statistics.median(r["read_references_seconds"] for r in runs), 2),
        "peak_rss_mb_max": max(r["peak_rss_mb"] for r in runs),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--devices", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--run", choices=["multivariate", "univariate"], help=argparse.SUPPRESS)
    parser.add_argument("--data", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.run:
        print(json.dumps(run_once(args.data, args.run)))
        return 0
    with tempfile.TemporaryDirectory(prefix="fs-scoring-") as tmp:
        folder = Path(tmp)
        started = time.perf_counter()
        prepare(folder, args.devices)
        print(f"inputs for {args.devices:,} devices written in {time.perf_counter() - started:.0f} s", flush=True)
        runs: dict[str, list[dict]] = {"univariate": [], "multivariate": []}
        for i in range(args.repeats):
            for scorer in ("univariate", "multivariate"):
                cmd = [sys.executable, __file__, "--run", scorer, "--data", str(folder)]
                done = subprocess.run(cmd, capture_output=True, text=True, check=True, cwd=ROOT)
                runs[scorer].append(json.loads(done.stdout.strip().splitlines()[-1]))
                print(f"run {i + 1} {scorer}: {runs[scorer][-1]}", flush=True)
    new, old = summary(runs["multivariate"]), summary(runs["univariate"])
    results = {
        "devices": args.devices,
        "windows_per_run": runs["multivariate"][0]["windows"],
        "cores": os.cpu_count(),
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
        "multivariate": new,
        "univariate_reference": old,
        "ratio_multivariate_to_univariate": round(new["seconds_median"] / old["seconds_median"], 2),
        "extra_seconds_per_day": round(new["seconds_median"] - old["seconds_median"], 1),
        "runs": runs,
        "note": "the scoring step of one day's monitoring run, both models; each run a cold process, alternating",
    }
    print(json.dumps({k: v for k, v in results.items() if k != "runs"}, indent=2))
    write_results(f"scoring_{args.devices}", results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
