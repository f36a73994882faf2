"""The one result shape: a verdict holds as its comparison says, survives the trip through a check's
metadata, and points at a heading the operator guide has."""

import math

import dagster as dg
import pytest

from fs_checks.results import check_result
from fs_domain.verdicts import OPERATOR_GUIDE, Verdict, guide_section
from tests.check_runs import guide_anchors, shape_problem

pytestmark = pytest.mark.unit

TO_DO = f"look at it; {guide_section('Features: coverage')}"


@pytest.mark.parametrize(
    ("observed", "comparison", "threshold", "holds"),
    [
        (0.98, ">=", 0.99, False),
        (0.99, ">=", 0.99, True),
        (61.0, "<=", 60.0, False),
        (60.0, "<=", 60.0, True),
        (0.1, "<", 0.1, False),
        (2, ">", 1, True),
        (0, "==", 0, True),
        (3, "==", 0, False),
        (math.nan, "<=", 1.0, False),
        (math.nan, ">=", 1.0, False),
    ],
)
def test_a_verdict_holds_as_its_comparison_says(observed, comparison, threshold, holds):
    assert Verdict(observed, threshold, comparison, "units", TO_DO).holds is holds


def test_a_verdict_needs_a_value_a_threshold_a_known_comparison_and_a_pointer_into_the_guide():
    with pytest.raises(ValueError):
        Verdict(None, 1, "<=", "minutes", TO_DO)
    with pytest.raises(ValueError):
        Verdict(1, None, "<=", "minutes", TO_DO)
    with pytest.raises(ValueError):
        Verdict(1, 2, "~", "minutes", TO_DO)
    with pytest.raises(ValueError):
        Verdict(1, 2, "<=", "minutes", "restart it")


def test_the_shape_survives_a_checks_metadata_and_an_incomplete_one_reads_as_none():
    verdict = Verdict(0.93, 0.95, ">=", "share of expected devices", TO_DO, "device_features_15m", "2026-01-05", "run-1")
    result = check_result(verdict, metadata={"covered_devices": 93}, severity=dg.AssetCheckSeverity.ERROR)
    assert not result.passed and result.description == "observed 0.93 share of expected devices, expected >= 0.95 share of expected devices"
    wrapped = {k: dg.MetadataValue.text(v) if isinstance(v, str) else dg.MetadataValue.float(v) for k, v in verdict.metadata().items()}
    assert Verdict.from_metadata(result.metadata) == verdict == Verdict.from_metadata(wrapped)
    assert result.metadata["covered_devices"].value == 93
    for key in ("observed", "threshold", "comparison", "unit", "what_to_do"):
        assert Verdict.from_metadata({k: v for k, v in result.metadata.items() if k != key}) is None
    # A what_to_do that points nowhere, or a comparison nobody knows, is no verdict either.
    assert Verdict.from_metadata({**result.metadata, "what_to_do": "restart it"}) is None
    assert Verdict.from_metadata({**result.metadata, "comparison": "~"}) is None


def test_check_result_names_the_asset_it_judged_and_passes_as_the_verdict_holds_unless_told():
    verdict = Verdict(0, 0, "==", "duplicated keys", TO_DO)
    result = check_result(verdict, asset_key=dg.AssetKey("device_features_1h"), check_name="check_feature_key_unique")
    assert result.passed and Verdict.from_metadata(result.metadata).asset == "device_features_1h"
    assert not check_result(verdict, passed=False).passed


def test_guide_links_are_githubs_anchors_of_the_guides_headings():
    assert (
        guide_section("Promoting a model's reference (and rolling back)")
        == f"{OPERATOR_GUIDE}#promoting-a-models-reference-and-rolling-back"
    )
    assert guide_section("Features: schema, keys and look-back") == f"{OPERATOR_GUIDE}#features-schema-keys-and-look-back"
    anchors = guide_anchors()
    assert guide_section("Features: coverage") in anchors and guide_section("No such section") not in anchors


def test_a_shape_linking_a_missing_heading_or_another_asset_is_reported():
    anchors = guide_anchors()
    asset = dg.AssetKey("device_features_15m")
    good = Verdict(1.0, 0.99, ">=", "share", TO_DO, asset.to_user_string(), "2026-01-05", "run-1").metadata()
    assert shape_problem(good, asset, anchors) is None
    assert "links no heading" in shape_problem({**good, "what_to_do": f"see {guide_section('No such section')}"}, asset, anchors)
    assert "judged asset" in shape_problem(good, dg.AssetKey("device_features_1h"), anchors)
    assert "judged asset" in shape_problem({k: v for k, v in good.items() if k != "partition"}, asset, anchors, "2026-01-05")
    assert "no complete verdict" in shape_problem({"observed": 1.0}, asset, anchors)
