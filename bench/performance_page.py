"""Writes `docs/performance.md` from `bench/results/*.json`: every benchmark's headline figures with
the commit and time they were measured at, so a figure and its file cannot disagree.

    .venv/bin/python bench/performance_page.py          # or: make docs

`tests/test_performance_page.py` fails while the page differs from what this script writes from the
results files as they are.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
PAGE = ROOT / "docs" / "performance.md"

Rows = list[tuple[str, object]]


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:,.1f} s"


def _gb(mb: float | None) -> str:
    return "-" if mb is None else f"{mb / 1024:.1f} GB"


def _runs(values: list | None) -> str:
    return f" (runs: {', '.join(map(str, values))})" if values else ""


def against_duckdb(r: dict) -> Rows:
    return [
        ("ours, median", f"{_seconds(r['ours_seconds_median'])}{_runs(r.get('ours_seconds_all'))}"),
        ("DuckDB, median", f"{_seconds(r['duckdb_seconds_median'])}{_runs(r.get('duckdb_seconds_all'))}"),
        ("ratio, ours / DuckDB", f"**{r['ratio_ours_to_duckdb']}x**"),
        ("peak memory, ours / DuckDB", f"{_gb(r['ours_peak_memory_mb'])} / {_gb(r['duckdb_peak_memory_mb'])}"),
        ("devices", f"{r['devices']:,}"),
    ]


def fleet_day(r: dict) -> Rows:
    rows: Rows = [(f"stage: {s['stage']}", _seconds(s["seconds"])) for s in r["stages"]]
    rows += [("whole day", f"**{_seconds(r['pipeline_seconds'])}**"), ("peak memory", _gb(r["peak_memory_mb"]))]
    if r.get("reference"):
        rows.append(("ratio to DuckDB (clean + features)", f"{r['reference']['ratio_ours_to_duckdb']}x"))
    return [("devices", f"{r['devices']:,}"), ("raw readings", f"{r['raw_rows']:,}"), *rows]


def cluster_day(r: dict) -> Rows:
    return [
        (
            f"{run['devices']:,} devices on {run['master'].split(':')[0]}",
            f"{_seconds(run['seconds'])} (clean {run['clean_seconds']}, features {run['features_seconds']}), "
            f"peak {_gb(run['peak_memory_mb'])}",
        )
        for run in r["runs"]
    ]


def serve(r: dict) -> Rows:
    return [(f"highest rate with p99 under 10 ms: {who}", f"{rate:,} req/s") for who, rate in r["highest_rate_with_p99_under_10ms"].items()]


def online(r: dict) -> Rows:
    met = r.get("targets_met", [])
    rows: Rows = [("targets met", f"{sum(t['met'] for t in met)} of {len(met)}")]
    rows += [(t["target"], f"{t['value']} ({'met' if t['met'] else '**not met**'})") for t in met if not t["met"]]
    return rows


def live_freshness(r: dict) -> Rows:
    return [
        (f"landing to {what}, p50 / p95", f"{_seconds(r[key]['p50_seconds'])} / {_seconds(r[key]['p95_seconds'])}")
        for what, key in (("clean readings", "landing_to_clean"), ("15-minute features", "landing_to_features_15m"))
        if key in r
    ] + [("devices", f"{r['devices']:,}"), ("files measured", r.get("files_measured"))]


def cold_run(r: dict) -> Rows:
    return (
        [
            (f"{side}: wall, median / slowest", f"{_seconds(r[side]['seconds']['median'])} / {_seconds(r[side]['seconds']['max'])}")
            for side in ("archive", "none")
        ]
        + [(f"{side}: CPU of the run's processes, median", _seconds(r[side]["cpu_seconds"]["median"])) for side in ("archive", "none")]
        + [
            ("ratio of wall, with / without the archive", f"{r['ratio_seconds_archive_to_none']}x"),
            ("ratio of CPU, with / without the archive", f"{r['ratio_cpu_archive_to_none']}x"),
        ]
    )


def scoring(r: dict) -> Rows:
    return [
        ("multivariate scoring, median", _seconds(r["multivariate"]["seconds_median"])),
        ("univariate reference, median", _seconds(r["univariate_reference"]["seconds_median"])),
        ("ratio", f"{r['ratio_multivariate_to_univariate']}x"),
    ]


def rewrite(r: dict) -> Rows:
    return [
        ("catch-up after one rewritten file, median", _seconds(r["catch_up_seconds_median"])),
        ("rebuild of the day, median", _seconds(r["rebuild_seconds_median"])),
        ("ratio", f"{r['ratio_catch_up_to_rebuild']}x"),
        ("catch-up equals rebuild", r["catch_up_equals_rebuild"]),
    ]


def offline(r: dict) -> Rows:
    return [
        (f"{run['entity_rows']:,} entity rows", f"ours {_seconds(run['ours_seconds'])}, DuckDB {_seconds(run['duckdb_seconds'])}")
        for run in r["runs"]
    ]


def training(r: dict) -> Rows:
    rows: Rows = [
        (
            "devices; days of 1-day windows; days of 1-hour windows (share)",
            f"{r['devices']:,}; {r['days']}; {r['hourly_days']} ({r['hourly_share']:.0%})",
        )
    ]
    for model, m in r["models"].items():
        rows.append(
            (
                f"{model}: {m['rows']:,} rows",
                f"ours {_seconds(m['seconds'])}, peak {_gb(m['peak_pss_mb'])}; DuckDB {_seconds(m['reference_seconds'])}, "
                f"peak {_gb(m['reference_peak_pss_mb'])}; **{m['ratio']}x**; same rows, labels and matches: {m['same_rows_positives_and_matches']}",
            )
        )
    if not r.get("finished", True):
        rows.append(("finished", "no: the benchmark stopped before its last run; the models above are complete"))
    return rows


def skab(r: dict) -> Rows:
    rows: Rows = []
    for run in r.get("runs", []):
        head = run["headline"]
        rows.append((f"{run['window_minutes']}-minute windows, {head['variant']}: pooled AUC", head["pooled_auc"]))
    return rows


def degradation(r: dict) -> Rows:
    rows: Rows = []
    for model, summary in r.get("summary", {}).items():
        at = summary.get("at_store_threshold", {})
        flagged = at.get("flagged_24h_before_share", {}).get("all_modes")
        rows.append((f"{model}: failing devices flagged 24 h before", flagged))
        rows.append((f"{model}: healthy days flagged", at.get("healthy_days_flagged_share")))
    return rows


def drill(r: dict) -> Rows:
    s = r.get("summary", {})
    return [
        ("false pages", s.get("false_pages")),
        (
            "incidents paged exactly once, naming their cause",
            f"{s.get('incidents_with_exactly_one_page_naming_cause')} of {s.get('incidents')}",
        ),
        ("longest SLA breach to first page", _seconds(s.get("max_seconds_breach_to_first_page"))),
        ("longest failing check or run to first page", _seconds(s.get("max_seconds_evidence_to_first_page"))),
        ("incidents resolved after their repair", s.get("incidents_resolved")),
    ]


# A results file's name (without .json, or before a `_` that follows it), the section's title, and what it shows.
SECTIONS: list[tuple[str, str, Callable[[dict], Rows]]] = [
    ("clean", "Cleaning one day (`bench/clean_bench.py`)", against_duckdb),
    ("features", "Features of one day (`bench/features_bench.py`)", against_duckdb),
    ("fleet_day_", "A whole day through every stage (`bench/fleet_day.py`)", fleet_day),
    ("cluster_day_", "Local mode and a standalone cluster (`bench/cluster_day.py`)", cluster_day),
    ("rewrite_", "A rewritten landing file (`bench/rewrite_bench.py`)", rewrite),
    ("live_freshness_", "Live freshness (`bench/live_freshness.py`)", live_freshness),
    ("cold_run", "A cold run with the driver's class archive and without (`bench/cold_run_bench.py`)", cold_run),
    ("offline", "Point-in-time reads (`bench/offline_bench.py`)", offline),
    ("training", "Training sets at the design's scale (`bench/training_bench.py`)", training),
    ("online", "Online store (`bench/online_bench.py`)", online),
    ("serve", "fs-serve over HTTP (`bench/serve_bench.py`)", serve),
    ("scoring_", "Anomaly scoring (`bench/scoring_bench.py`)", scoring),
    ("skab_auc", "SKAB pump runs (`bench/skab_anomaly_auc.py`)", skab),
    ("degradation", "Simulated failing devices (`bench/degradation_bench.py`)", degradation),
    ("oncall_drill", "Paging drill (`bench/oncall_drill.py`)", drill),
]


def _stamp(r: dict) -> str:
    commit = r.get("commit")
    if not commit:
        where = f", commit inferred {r['commit_inferred'][:7]}" if r.get("commit_inferred") else ""
        stamp = f"**no commit recorded**{where}: re-run to stamp it"
    else:
        stamp = f"commit {commit[:7]}" + (" with uncommitted changes" if r.get("uncommitted_changes") else "")
    at = r.get("measured_at") or r.get("ended_at") or "time not recorded"
    extra = f", {r['cores']} cores" if r.get("cores") else ""
    if r.get("cpu_steal_share"):
        extra += f", {r['cpu_steal_share']:.1%} of the CPU taken by the host meanwhile"
    return f"{stamp}, measured {at}{extra}"


def _cell(value: object) -> str:
    return str(value).replace("|", "\\|").replace("\n", " ")


def page(results: Path = RESULTS) -> str:
    files = sorted(results.glob("*.json"))
    lines = [
        "# Performance",
        "",
        "Generated by `bench/performance_page.py` (`make docs`) from `bench/results/`; do not edit by hand.",
        "Each section is one results file: its commit, when it was measured, and its headline figures.",
        "The pages beside this one explain what each benchmark does and what the figures mean.",
        "",
    ]
    shown: set[Path] = set()
    for prefix, title, rows_of in SECTIONS:
        name = prefix.rstrip("_")
        for f in [f for f in files if f.stem == name or f.stem.startswith(name + "_")]:
            if f in shown:
                continue
            shown.add(f)
            r = json.loads(f.read_text())
            lines += [f"## {title}: `{f.name}`", "", _stamp(r) + ".", "", "| figure | value |", "|---|---|"]
            try:
                rows = rows_of(r)
            except (KeyError, TypeError, IndexError) as exc:
                rows = [("(figures not read)", f"this file's shape is not the one the page reads: {type(exc).__name__} {exc}")]
            lines += [f"| {_cell(k)} | {_cell(v)} |" for k, v in rows] + [""]
    rest = [f.name for f in files if f not in shown]
    if rest:
        lines += ["## Other results files", "", ", ".join(f"`{n}`" for n in rest), ""]
    return "\n".join(lines)


def main() -> int:
    PAGE.write_text(page())
    print(f"wrote {PAGE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
