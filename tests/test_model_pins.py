"""Which feature set version each model is served on: the pin table, its override, and what a deployment computes."""

import pytest

from fs_domain.models import MODEL_PINS, MODEL_PINS_SETTING, InvalidModelPins, model_pins, models_pinned_to, served_versions
from fs_resources.feature_store import FeatureStoreResource


@pytest.mark.unit
def test_an_override_moves_one_model_and_the_deployment_computes_every_pinned_version():
    pins = model_pins("device_health_1d=v2")
    assert pins == {**MODEL_PINS, "device_health_1d": "v2"} and pins["compressor_failure_1h"] == MODEL_PINS["compressor_failure_1h"]
    assert served_versions(pins, "v1") == ("v1", "v2")
    assert set(models_pinned_to("v2", pins)) == {"device_health_1d"}
    assert models_pinned_to("v2", pins)["device_health_1d"].feature_set_version == "v2"
    # The deployment's own version is computed for the Device object even with no model on it.
    assert served_versions(model_pins("device_health_1d=v2,compressor_failure_1h=v2"), "v1") == ("v1", "v2")
    assert model_pins(" ") == MODEL_PINS


@pytest.mark.unit
@pytest.mark.parametrize(
    "setting, names",
    [
        ("device_health_1d", "is not model=version"),
        ("device_health_7d=v2", "unknown model 'device_health_7d'"),
        ("device_health_1d=v9", "unknown feature set version 'v9'"),
    ],
)
def test_a_pin_that_cannot_work_is_refused_naming_the_setting(setting, names):
    with pytest.raises(InvalidModelPins, match=f"^{MODEL_PINS_SETTING}: .*{names}"):
        model_pins(setting)


@pytest.mark.unit
def test_the_resource_reads_the_environment_and_its_run_config_wins(monkeypatch):
    monkeypatch.setenv(MODEL_PINS_SETTING, "compressor_failure_1h=v2")
    assert FeatureStoreResource().pins()["compressor_failure_1h"] == "v2"
    assert FeatureStoreResource(model_versions="device_health_1d=v2").pins() == {**MODEL_PINS, "device_health_1d": "v2"}
    monkeypatch.setenv(MODEL_PINS_SETTING, "compressor_failure_1h=v7")
    with pytest.raises(InvalidModelPins, match=f"^{MODEL_PINS_SETTING}: "):
        FeatureStoreResource.from_environment()
