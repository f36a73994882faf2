"""The code location's shape: every key it had before a refactor, and imports that run one way."""

import ast
import json
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[1]


def test_the_code_location_keeps_every_asset_check_job_sensor_and_schedule_key():
    """The recorded keys (tests/code_location_keys.json) are the location's, no more and no fewer:
    a key renamed or lost in a move shows here before an operator's backfill or alert finds it."""
    from definitions import defs

    repo = defs.get_repository_def()
    found = {
        "assets": sorted(k.to_user_string() for k in repo.asset_graph.get_all_asset_keys()),
        "checks": sorted(f"{k.asset_key.to_user_string()}:{k.name}" for k in repo.asset_graph.asset_check_keys),
        "jobs": sorted(j.name for j in repo.get_all_jobs()),
        "sensors": sorted(s.name for s in repo.sensor_defs),
        "schedules": sorted(s.name for s in repo.schedule_defs),
    }
    recorded = json.loads((ROOT / "tests" / "code_location_keys.json").read_text())
    assert found == recorded


def _imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def test_definitions_merges_domain_locations_and_resources_only():
    assert _imports(ROOT / "definitions.py") & {"fs_assets", "fs_checks", "fs_sensors", "fs_domain"} == set()


@pytest.mark.parametrize(
    "package, forbidden",
    [
        (
            "fs_domain",
            {
                "dagster",
                "dagster_pyspark",
                "pyspark",
                "delta",
                "redis",
                "fs_resources",
                "fs_assets",
                "fs_checks",
                "fs_sensors",
                "fs_location",
            },
        ),
        ("fs_resources", {"fs_assets", "fs_checks", "fs_sensors", "fs_location"}),
        ("fs_assets", {"fs_checks", "fs_sensors", "fs_location"}),
        ("fs_checks", {"fs_sensors", "fs_location"}),
        ("fs_sensors", {"fs_location"}),
    ],
)
def test_no_module_imports_a_layer_above_its_own(package, forbidden):
    """The same rule as the import-linter contracts in pyproject.toml, readable as a test."""
    offenders = {str(p.relative_to(ROOT)): sorted(_imports(p) & forbidden) for p in (ROOT / package).rglob("*.py")}
    assert offenders, f"no modules found in {package}"
    assert {p: names for p, names in offenders.items() if names} == {}


def test_daily_assets_backfill_in_runs_of_a_bounded_number_of_days():
    from fs_assets.features.assets import feature_assets
    from fs_assets.ingest.assets import clean_sensor_readings
    from fs_resources import settings

    for asset in (clean_sensor_readings, *feature_assets):
        policy = asset.backfill_policy
        assert policy.max_partitions_per_run == settings.backfill_days_per_run() == settings.DEFAULT_BACKFILL_DAYS_PER_RUN


def test_the_data_root_and_the_instance_folder_are_private_to_their_owner(tmp_path, monkeypatch):
    from fs_resources import settings

    data, home = tmp_path / "data", tmp_path / "home"
    home.mkdir(mode=0o755)
    monkeypatch.setenv("FS_DATA_ROOT", str(data))
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    settings.secure_local_folders()
    assert (data.stat().st_mode & 0o777, home.stat().st_mode & 0o777) == (0o700, 0o700)
    assert settings.private_folder("s3a://bucket/root") is None
