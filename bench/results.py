"""Where every benchmark writes its figures: `bench/results/<name>.json`, stamped with the time."""

import json
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
