"""Where every benchmark writes its figures: `bench/results/<name>.json`, stamped with the time."""

import json
import statistics
from datetime import UTC, datetime
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def write_results(name: str, results: dict) -> Path:
    results.setdefault("measured_at", datetime.now(UTC).isoformat(timespec="seconds"))
    out_file = RESULTS / f"{name}.json"
    out_file.parent.mkdir(parents=True, exist_ok=True)
    out_file.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {out_file}")
    return out_file


def against_reference(ours: list[float], theirs: list[float], ours_peak_mb: list[float], theirs_peak_mb: list[float]) -> dict:
    """Medians, maxima and the ratio of our runs to the reference's, with both peaks of memory."""
    mine, ref = statistics.median(ours), statistics.median(theirs)
    return {
        "ours_seconds_median": round(mine, 1),
        "ours_seconds_max": round(max(ours), 1),
        "duckdb_seconds_median": round(ref, 1),
        "duckdb_seconds_max": round(max(theirs), 1),
        "ratio_ours_to_duckdb": round(mine / ref, 2),
        "ours_peak_memory_mb": round(max(ours_peak_mb)),
        "duckdb_peak_memory_mb": round(max(theirs_peak_mb)),
    }
