"""Which feature set versions are live: the deployment's (the `Device` object's tables and keys)
and the one each model is pinned to (its scores, drift reports and online vectors)."""

import os

import dagster as dg
from pydantic import Field

from fs_domain import tables
from fs_domain.features import DEFAULT_FEATURE_SET_VERSION, FEATURE_SET_VERSIONS
from fs_domain.models import (
    MODEL_PINS_SETTING,
    ModelSpec,
    UnknownModel,
    device_score_model_of,
    model_pins,
    model_spec,
    models_pinned_to,
    served_versions,
)


class FeatureStoreResource(dg.ConfigurableResource):
    """The deployment's feature set version (unset: FS_FEATURE_SET_VERSION, else v1) and the models'
    pins (unset: FS_MODEL_VERSIONS over `MODEL_PINS`)."""

    feature_set_version: str | None = Field(
        default=None, description="v1, v2, ...: the `Device` object's version; a new version writes a new table path and key prefix."
    )
    model_versions: str | None = Field(
        default=None,
        description="Models pinned to another version than fs_domain.models.MODEL_PINS says, e.g. `device_health_1d=v2`; "
        "unset: FS_MODEL_VERSIONS.",
    )

    @classmethod
    def from_environment(cls) -> "FeatureStoreResource":
        """The resource the code location runs with, its settings checked now: a pin that cannot work
        fails the load naming FS_MODEL_VERSIONS, not the first run that reads it."""
        resource = cls()
        resource.versions()
        return resource

    def version(self) -> str:
        """The deployment's version: the `Device` object's table and key prefix."""
        version = self.feature_set_version or os.environ.get("FS_FEATURE_SET_VERSION") or DEFAULT_FEATURE_SET_VERSION
        if version not in FEATURE_SET_VERSIONS:
            raise ValueError(f"unknown feature set version {version!r}; the registry knows {list(FEATURE_SET_VERSIONS)}")
        return version

    def pins(self) -> dict[str, str]:
        """Each model's served version, by name."""
        if self.model_versions is not None:
            return model_pins(self.model_versions, setting="feature_store.model_versions")
        return model_pins(os.environ.get(MODEL_PINS_SETTING), setting=MODEL_PINS_SETTING)

    def versions(self) -> tuple[str, ...]:
        """Every version the deployment computes: its own and each model's pinned one."""
        return served_versions(self.pins(), self.version())

    def models_on(self, version: str) -> dict[str, ModelSpec]:
        """The models pinned to `version`, by name."""
        return models_pinned_to(version, self.pins())

    def model(self, name: str) -> ModelSpec:
        """A model's spec on the version it is pinned to."""
        pins = self.pins()
        if name not in pins:
            raise UnknownModel(f"no model {name!r}; models: {sorted(pins)}")
        return model_spec(name, pins[name])

    def device_score_model(self) -> ModelSpec:
        """The model whose score the `Device` object shows, on its pinned version."""
        return device_score_model_of(self.pins())

    def features_table(self, version: str | None = None) -> str:
        """Table name under the Delta root: device_features/v1, device_features/v2, ... (unset: the deployment's)."""
        return tables.features_table(version or self.version())

    def objects_table(self) -> str:
        """The `device_objects` table built from the deployment's version: device_objects/v1, ..."""
        return tables.objects_table(self.version())
