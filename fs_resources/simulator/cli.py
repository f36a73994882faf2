"""`fs-sim`: fill the landing zone with a simulated fleet, keep it live, or import SKAB.

fs-sim generate --devices 200 --start 2026-01-01 --days 3 --seed 7
fs-sim generate --devices 200 --days 3 --until-now     (the last 3 days and today so far)
fs-sim live --interval 60                               (continues the fleet the landing zone holds)
fs-sim live --silence site-0002 --drift site-0001:temp_evaporator:12
fs-sim import-skab --skab-dir ../shared/data/skab
"""

from __future__ import annotations

import argparse
import sys
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pandas as pd
from tqdm import tqdm

from fs_domain.contract import SENSOR_NAMES
from fs_resources import settings
from fs_resources.simulator import fleet, skab

# Readings per file `fs-sim live` writes at most (a large fleet's first catch-up spans many files).
LIVE_FILE_ROWS = 2_000_000
DEFAULT_DEVICES = 200
DEFAULT_SEED = 7


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


def _drift(text: str) -> tuple[str, str, float]:
    site, _, rest = text.partition(":")
    sensor, _, rate = rest.partition(":")
    try:
        per_hour = float(rate)
    except ValueError:
        per_hour = None
    if not site or sensor not in SENSOR_NAMES or per_hour is None:
        raise argparse.ArgumentTypeError(f"expected SITE:SENSOR:PER_HOUR with SENSOR one of {', '.join(SENSOR_NAMES)}, got {text!r}")
    return site, sensor, per_hour


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fs-sim", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-root", default=None, help="data root (default: FS_DATA_ROOT or ./data)")
    sub = parser.add_subparsers(dest="command", required=True)

    gen = sub.add_parser("generate", help="write N devices x D days of readings, the registry and maintenance events")
    gen.add_argument("--devices", type=_positive, default=DEFAULT_DEVICES)
    gen.add_argument("--start", type=_date, default=None, help="first day (UTC; default: --days before today)")
    gen.add_argument("--days", type=_positive, default=3)
    gen.add_argument("--seed", type=int, default=DEFAULT_SEED)
    gen.add_argument("--clean", action="store_true", help="no transport faults (every reading once, in range)")
    gen.add_argument("--if-empty", action="store_true", help="do nothing when the landing zone already holds readings")
    gen.add_argument(
        "--until-now",
        action="store_true",
        help="from --start to the current minute (today's readings so far included), for `live` to continue",
    )

    live = sub.add_parser(
        "live",
        help="keep appending current readings: continues where the landing zone's readings end (a new fleet from today's midnight when it holds none)",
    )
    live.add_argument(
        "--devices",
        type=_positive,
        default=None,
        help=f"devices of a new fleet (default {DEFAULT_DEVICES}); must match a fleet already there",
    )
    live.add_argument(
        "--seed", type=int, default=None, help=f"seed of a new fleet (default {DEFAULT_SEED}); must match a fleet already there"
    )
    live.add_argument("--clean", action="store_true", help="a new fleet without transport faults")
    live.add_argument("--interval", type=float, default=300.0, help="seconds between files (default 300)")
    live.add_argument("--iterations", type=int, default=0, help="stop after this many files (0: run until stopped)")
    live.add_argument("--max-catch-up-days", type=int, default=3, help="days before today the first catch-up goes back at most (default 3)")
    live.add_argument("--silence", action="append", default=[], metavar="SITE", help="the gateway of SITE sends nothing (repeatable)")
    live.add_argument(
        "--drift",
        action="append",
        default=[],
        type=_drift,
        metavar="SITE:SENSOR:PER_HOUR",
        help="SENSOR of every unit of SITE reads PER_HOUR units further off each hour from now (repeatable)",
    )

    imp = sub.add_parser("import-skab", help="map the SKAB pump data onto the landing zone")
    imp.add_argument("--skab-dir", type=Path, default=None, help="SKAB data folder (default: FS_SKAB_DIR or ../shared/data/skab)")
    imp.add_argument("--timezone", default=skab.SKAB_TIMEZONE, help="time zone of SKAB's naive timestamps")
    return parser


def _next_minute(now: datetime) -> datetime:
    """The end (exclusive) of the readings that exist at `now`: its minute's reading is taken."""
    return now.replace(second=0, microsecond=0) + timedelta(minutes=1)


def _spec(devices: int, start: date, days: int, seed: int, clean: bool) -> fleet.FleetSpec:
    return fleet.FleetSpec.clean(devices, start, days, seed) if clean else fleet.FleetSpec(devices, start, days, seed)


def run_generate(args: argparse.Namespace, root: str) -> None:
    landing = Path(settings.landing_root(root))
    if args.if_empty and any(landing.glob("date=*/*")):
        print(f"landing zone {landing} already holds readings; nothing generated")
        return
    today = datetime.now(UTC).date()
    start = args.start or today - timedelta(days=args.days)
    until = None
    days = args.days
    if args.until_now:
        if start > today:
            raise SystemExit(f"fs-sim: --start {start} is after today ({today}); nothing to write until now")
        until, days = _next_minute(datetime.now(UTC)), (today - start).days + 1
    spec = _spec(args.devices, start, days, args.seed, args.clean)
    totals = fleet.generate(spec, root, progress=lambda days: tqdm(days, desc="simulating days", unit="day"), until=until)
    fleet.save_fleet(spec, root)
    print(
        f"wrote {totals['rows']:,} readings in {totals['files']} files ({totals['late_files']} late) for {args.devices} devices "
        f"under {settings.landing_root(root)}" + (f", the last of {until - timedelta(minutes=1):%Y-%m-%d %H:%M} UTC" if until else "")
    )


def live_fleet(args: argparse.Namespace, root: str, today: date) -> tuple[fleet.FleetSpec, bool]:
    """The fleet the landing zone holds (the options must not contradict it), or a new one from
    today; and whether it is new."""
    held = fleet.load_fleet(root)
    if held is None:
        spec = _spec(args.devices or DEFAULT_DEVICES, today, 1, DEFAULT_SEED if args.seed is None else args.seed, args.clean)
        fleet.save_fleet(spec, root)
        return spec, True
    wanted = {"devices": args.devices, "seed": args.seed}
    clashes = [f"--{k} {v} (it has {getattr(held, k)})" for k, v in wanted.items() if v is not None and v != getattr(held, k)]
    if args.clean and held != fleet.FleetSpec.clean(held.devices, held.start, held.days, held.seed):
        clashes.append("--clean (its transport has faults)")
    if clashes:
        raise SystemExit(
            f"fs-sim: the landing zone holds a fleet of {held.devices} devices (seed {held.seed}) since {held.start}; "
            f"live continues it, so {', '.join(clashes)} does not apply. Start from an empty data root for another fleet."
        )
    return held, False


def catch_up(
    spec: fleet.FleetSpec,
    profile: fleet.FleetProfile,
    root: str,
    until: datetime,
    faults: fleet.Faults,
    sites: pd.Series,
    max_catch_up_days: int,
    declared: set[date],
) -> list[str]:
    """Write the fleet's readings from where the landing zone's end (at most `max_catch_up_days`
    before `until`'s midnight, never before the fleet began) to `until`, a day at a time; declare each
    day's planned gaps once (`declared` holds the days done). Returns a line per day written."""
    midnight = datetime(until.year, until.month, until.day, tzinfo=UTC)
    began = datetime(spec.start.year, spec.start.month, spec.start.day, tzinfo=UTC)
    since = max(fleet.simulated_until(root) or midnight, midnight - timedelta(days=max_catch_up_days), began)
    lines = []
    for day, first, end in fleet.day_ranges(since, until):
        # Shard by shard, a file per LIVE_FILE_ROWS readings: a large fleet's catch-up to the
        # current minute never holds the whole day in memory.
        written, files, gaps = fleet.write_live(spec, profile, root, day, (first, end), faults, sites, LIVE_FILE_ROWS)
        if day not in declared:
            fleet.write_expected_gaps(gaps, root, day)  # the day's planned silences, declared with its first readings
            declared.add(day)
        span = f"{first // 60:02d}:{first % 60:02d}-{end // 60:02d}:{end % 60:02d}"
        lines.append(f"wrote {written:,} readings of {day} {span} in {files} file(s) under {fleet.landing_dir(root, day)}")
    return lines


def run_live(args: argparse.Namespace, root: str) -> None:
    began = datetime.now(UTC)
    spec, new = live_fleet(args, root, began.date())
    profile = fleet.build_profile(spec)
    registry = fleet.registry_frame(profile, spec)
    # Rewritten only for a new fleet: each rewrite is a registry run for the landing sensor.
    if new or not Path(settings.registry_csv_path(root)).exists():
        fleet.write_registry(registry, root)
    sites = registry.set_index("device_id")["site_id"]
    unknown = sorted((set(args.silence) | {d[0] for d in args.drift}) - set(sites))
    if unknown:
        raise SystemExit(f"fs-sim: no site {', '.join(unknown)} in this fleet (sites {sites.iloc[0]} .. {sites.iloc[-1]})")
    faults = fleet.Faults(frozenset(args.silence), tuple(fleet.Drift(site, sensor, rate, began) for site, sensor, rate in args.drift))
    declared: set[date] = set()
    iteration = 0
    while True:
        tick = time.monotonic()
        now = datetime.now(UTC)
        for line in catch_up(spec, profile, root, _next_minute(now), faults, sites, args.max_catch_up_days, declared):
            print(f"{now:%H:%M:%S} {line}", flush=True)
        iteration += 1
        if args.iterations and iteration >= args.iterations:
            return
        time.sleep(max(0.0, args.interval - (time.monotonic() - tick)))


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
