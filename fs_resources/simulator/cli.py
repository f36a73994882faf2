"""`fs-sim`: fill the landing zone with a simulated fleet, keep it live, or import SKAB.

fs-sim generate --devices 200 --start 2026-01-01 --days 3 --seed 7
fs-sim live --devices 200 --interval 300
fs-sim import-skab --skab-dir ../shared/data/skab
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

from tqdm import tqdm

from fs_resources import settings
from fs_resources.simulator import fleet, skab

# Readings per file `fs-sim live` writes at most (a large fleet's first catch-up spans many files).
LIVE_FILE_ROWS = 2_000_000


def _date(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected a date as YYYY-MM-DD, got {text!r}") from exc


def _positive(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fs-sim", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-root", default=None, help="data root (default: FS_DATA_ROOT or ./data)")
    sub = parser.add_subparsers(dest="command", required=True)

    gen = sub.add_parser("generate", help="write N devices x D days of readings, the registry and maintenance events")
    gen.add_argument("--devices", type=_positive, default=200)
    gen.add_argument("--start", type=_date, default=date.today() - timedelta(days=3))
    gen.add_argument("--days", type=_positive, default=3)
    gen.add_argument("--seed", type=int, default=7)
    gen.add_argument("--clean", action="store_true", help="no transport faults (every reading once, in range)")
    gen.add_argument("--if-empty", action="store_true", help="do nothing when the landing zone already holds readings")

    live = sub.add_parser("live", help="keep appending current readings for today")
    live.add_argument("--devices", type=_positive, default=200)
    live.add_argument("--seed", type=int, default=7)
    live.add_argument("--interval", type=float, default=300.0, help="seconds between files (default 300)")
    live.add_argument("--iterations", type=int, default=0, help="stop after this many files (0: run until stopped)")

    imp = sub.add_parser("import-skab", help="map the SKAB pump data onto the landing zone")
    imp.add_argument("--skab-dir", type=Path, default=None, help="SKAB data folder (default: FS_SKAB_DIR or ../shared/data/skab)")
    imp.add_argument("--timezone", default=skab.SKAB_TIMEZONE, help="time zone of SKAB's naive timestamps")
    return parser


def run_generate(args: argparse.Namespace, root: str) -> None:
    landing = Path(settings.landing_root(root))
    if args.if_empty and any(landing.glob("date=*/*")):
        print(f"landing zone {landing} already holds readings; nothing generated")
        return
    spec = (
        fleet.FleetSpec.clean(args.devices, args.start, args.days, args.seed)
        if args.clean
        else fleet.FleetSpec(args.devices, args.start, args.days, args.seed)
    )
    totals = fleet.generate(spec, root, progress=lambda days: tqdm(days, desc="simulating days", unit="day"))
    print(
        f"wrote {totals['rows']:,} readings in {totals['files']} files ({totals['late_files']} late) for {args.devices} devices under {settings.landing_root(root)}"
    )


def run_live(args: argparse.Namespace, root: str) -> None:
    written_until: dict[date, int] = {}
    iteration = 0
    while True:
        now = datetime.now(UTC)
        today = now.date()
        spec = replace(fleet.FleetSpec(args.devices, today, 1, args.seed), late_outage_share=0)
        profile = fleet.build_profile(spec)
        if not written_until:
            fleet.write_registry(fleet.registry_frame(profile, spec), root)
        start = written_until.get(today, 0)
        end = now.hour * 60 + now.minute + 1
        if end > start:
            # Shard by shard, a file per LIVE_FILE_ROWS readings: a large fleet's catch-up to the
            # current minute never holds the whole day in memory.
            written = files = 0
            for part in fleet.simulate_in_parts(spec, profile, 0, (start, end), LIVE_FILE_ROWS):
                suffix = f"-{files:04d}" if fleet.shard_count(profile) > 1 else ""
                fleet.write_parquet(part, fleet.landing_dir(root, today) / f"live-{now:%H%M%S}{suffix}.parquet")
                written, files = written + len(part), files + 1
            print(f"{now:%H:%M:%S} wrote {written:,} readings in {files} file(s) under {fleet.landing_dir(root, today)}", flush=True)
            written_until[today] = end
        iteration += 1
        if args.iterations and iteration >= args.iterations:
            return
        time.sleep(args.interval)


def run_import_skab(args: argparse.Namespace, root: str) -> None:
    skab_dir = (args.skab_dir or settings.skab_dir()).resolve()
    result = skab.import_skab(skab_dir, root, args.timezone)
    print(f"imported {result.devices} SKAB devices, {result.rows:,} readings and {result.events} label events on {', '.join(result.dates)}")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.data_root:
        root = str(Path(args.data_root).expanduser().resolve())
    else:
        root = settings.data_root()
    try:
        {"generate": run_generate, "live": run_live, "import-skab": run_import_skab}[args.command](args, root)
    except FileNotFoundError as exc:
        print(f"fs-sim: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
