"""Screenshots of this project's Dagster UI for the operator guide, from a real headless Chromium.

    make screenshots        # or: .venv/bin/python docs/screenshots.py [--devices 20 --days 2]

On a scratch data root and DAGSTER_HOME: simulates a small fleet, ingests it, starts the webserver
and the daemon on 127.0.0.1, launches a backfill of the three feature assets through the same
GraphQL mutation the UI uses, and photographs the asset graph, the backfill while it runs and
when it is done, and a feature asset's partitions. Writes docs/images/*.png. Needs Debian's
`chromium` (installed by `make screenshots` when missing).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import date, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

IMAGES = ROOT / "docs" / "images"
FEATURES = ["device_features_15m", "device_features_1h", "device_features_1d"]


def screenshot(url: str, out: Path, width: int = 1600, height: int = 1000, settle_ms: int = 20000) -> None:
    """One page, rendered by headless Chromium after its GraphQL calls have had `settle_ms` of (virtual) time."""
    browser = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    if browser is None:
        raise SystemExit("error: no chromium on PATH; install Debian's `chromium` package (make screenshots does)")
    with tempfile.TemporaryDirectory() as profile:
        subprocess.run(
            [
                browser,
                "--headless=new",
                "--no-sandbox",
                "--disable-gpu",
                "--hide-scrollbars",
                "--disable-dev-shm-usage",
                f"--user-data-dir={profile}",
                f"--window-size={width},{height}",
                f"--virtual-time-budget={settle_ms}",
                f"--screenshot={out}",
                url,
            ],
            check=True,
            capture_output=True,
            timeout=180,
        )
    if not out.exists() or out.stat().st_size < 10_000:
        raise SystemExit(f"error: chromium wrote no usable screenshot of {url}")
    print(f"  {out.relative_to(ROOT)}  <- {url}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--devices", type=int, default=20)
    parser.add_argument("--days", type=int, default=2)
    parser.add_argument("--keep", action="store_true", help="keep the scratch folder (its path is printed)")
    args = parser.parse_args(argv)

    scratch = Path(tempfile.mkdtemp(prefix="fs-screenshots-"))
    home, data = scratch / "dagster_home", scratch / "data"
    home.mkdir()
    shutil.copy(ROOT / "dagster_home" / "dagster.yaml", home / "dagster.yaml")
    # What the UI's "Skip" on its first-visit newsletter dialog writes: the pages show without it.
    (home / ".nux").mkdir()
    (home / ".nux" / "nux.yaml").write_text("seen: 1\n")
    os.environ.update(DAGSTER_HOME=str(home), FS_DATA_ROOT=str(data))

    import dagster as dg

    from definitions import defs
    from fs_assets.ingest.assets import clean_sensor_readings, device_registry
    from fs_checks.ingest_checks import ingest_checks
    from fs_resources.dagster_ui import DagsterUI
    from fs_resources.embedded_redis import EmbeddedRedis
    from fs_resources.simulator.fleet import FleetSpec, generate

    start = date.today() - timedelta(days=args.days)
    days = [(start + timedelta(days=i)).isoformat() for i in range(args.days)]
    print(f"Simulating {args.devices} devices over {days[0]}..{days[-1]} in {scratch}")
    generate(FleetSpec.clean(devices=args.devices, start=start, days=args.days, seed=3), str(data))
    redis_server = EmbeddedRedis(data / "redis")
    os.environ["REDIS_URL"] = redis_server.start()
    IMAGES.mkdir(parents=True, exist_ok=True)
    try:
        instance = dg.DagsterInstance.get()
        print("Ingesting the registry and the clean readings (in process, recorded in the scratch instance)")
        assert dg.materialize([device_registry], resources=defs.resources, instance=instance).success
        tags = {"dagster/asset_partition_range_start": days[0], "dagster/asset_partition_range_end": days[-1]}
        assert dg.materialize([clean_sensor_readings, *ingest_checks], resources=defs.resources, instance=instance, tags=tags).success

        with DagsterUI(home, env={"FS_DATA_ROOT": str(data), "REDIS_URL": os.environ["REDIS_URL"]}) as ui:
            print(f"Dagster UI at {ui.url}; paused: {', '.join(ui.pause_automation())}")
            ui.start_daemon()
            backfill = ui.launch_backfill(FEATURES, days, title="Feature backfill")
            groups = ",".join(f"global@global:{g}" for g in ("ingest", "features", "training", "monitoring", "ontology"))
            screenshot(f"{ui.url}/asset-groups?expanded={groups}", IMAGES / "asset_graph.png", width=2200, height=1200)
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline and not ui.backfill(backfill)["runs"]:
                time.sleep(2)
            screenshot(f"{ui.url}/runs/b/{backfill}", IMAGES / "backfill_running.png")
            state = ui.wait_for_backfill(backfill)
            print(f"Backfill {backfill}: {state['status']}, {len(state['runs'])} run(s)")
            screenshot(f"{ui.url}/runs/b/{backfill}", IMAGES / "backfill_done.png")
            screenshot(f"{ui.url}/assets/device_features_1h?view=partitions", IMAGES / "feature_partitions.png")
    finally:
        redis_server.stop()
        if args.keep:
            print(f"kept {scratch}")
        else:
            shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
