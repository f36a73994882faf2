"""Which feature set version is live: it selects the Delta table path and the Redis key prefix."""

import os

import dagster as dg
from pydantic import Field

from fs_domain import tables
from fs_domain.features import DEFAULT_FEATURE_SET_VERSION, FEATURE_SET_VERSIONS


class FeatureStoreResource(dg.ConfigurableResource):
    """The feature set version the assets write and read; unset reads FS_FEATURE_SET_VERSION, else v1."""

    feature_set_version: str | None = Field(default=None, description="v1, v2, ...: a new version writes a new table path and key prefix.")

    def version(self) -> str:
        version = self.feature_set_version or os.environ.get("FS_FEATURE_SET_VERSION") or DEFAULT_FEATURE_SET_VERSION
        if version not in FEATURE_SET_VERSIONS:
            raise ValueError(f"unknown feature set version {version!r}; the registry knows {list(FEATURE_SET_VERSIONS)}")
        return version

    def features_table(self) -> str:
        """Table name under the Delta root: device_features/v1, device_features/v2, ..."""
        return tables.features_table(self.version())

    def objects_table(self) -> str:
        """The `device_objects` table built from this version's features: device_objects/v1, ..."""
        return tables.objects_table(self.version())
