"""The OpenAPI 3.1 document of `fs-serve`, built from the `Device` object's and the models' layouts."""

from __future__ import annotations

from fs_domain.contract import DEVICE_ID_PATTERN
from fs_domain.models import model_pins, pinned_models
from fs_resources.online import EntryLayout, OnlineStore
from fs_resources.serving.limits import DEVICES_PATH, MAX_DEVICES, MODELS_PREFIX, MODELS_SUFFIX

JSON_TYPES = {
    "double": {"type": ["number", "null"]},
    "long": {"type": ["integer", "null"]},
    "date": {"type": ["string", "null"], "format": "date"},
    "timestamp": {"type": ["string", "null"], "format": "date-time", "description": "ISO-8601, UTC"},
    "string": {"type": ["string", "null"]},
}
ERROR = {
    "type": "object",
    "properties": {
        "error": {
            "type": "object",
            "properties": {"status": {"type": "integer"}, "field": {"type": ["string", "null"]}, "message": {"type": "string"}},
        }
    },
}
STATUS = {"type": "string", "enum": ["present", "absent", "expired"]}
PROJECTION = {
    "type": ["object", "null"],
    "properties": {
        "hydrated_at": {"type": ["string", "null"], "format": "date-time"},
        "completed_at": {"type": ["string", "null"], "format": "date-time"},
        "age_seconds": {"type": ["number", "null"]},
        "live_devices": {"type": ["integer", "null"]},
    },
}
DEVICE_IDS = {"type": "array", "items": {"type": "string", "pattern": DEVICE_ID_PATTERN.pattern}, "minItems": 1, "maxItems": MAX_DEVICES}


def _properties(layout: EntryLayout) -> dict:
    return {"type": "object", "properties": {name: JSON_TYPES[layout.dtypes[name]] for name in layout.fields}}


def _errors(*statuses: int) -> dict:
    return {str(s): {"description": "refused", "content": {"application/json": {"schema": ERROR}}} for s in statuses}


def _post(summary: str, request: dict, response: dict) -> dict:
    return {
        "post": {
            "summary": summary,
            "security": [{"bearer": []}, {"apiKey": []}],
            "requestBody": {"required": True, "content": {"application/json": {"schema": request}}},
            "responses": {
                "200": {"description": "found", "content": {"application/json": {"schema": response}}},
                **_errors(400, 401, 403, 404, 405, 413, 500, 503),
            },
        }
    }


def document(store: OnlineStore) -> dict:
    device = store.layout()
    models = sorted(name for name, spec in pinned_models(store.model_versions or model_pins(None)).items() if spec.served_online)
    devices_response = {
        "type": "object",
        "properties": {
            "feature_set_version": {"type": "string"},
            "projection": PROJECTION,
            "devices": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {
                        "device_id": {"type": "string"},
                        "status": STATUS,
                        "properties": {**_properties(device), "type": ["object", "null"]},
                    },
                },
            },
        },
    }
    vectors_response = {
        "type": "object",
        "properties": {
            "model": {"type": "string"},
            "feature_set_version": {"type": "string"},
            "features": {"type": "array", "items": {"type": "string"}, "description": "the order of every vector's values"},
            "projection": PROJECTION,
            "vectors": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {
                        "device_id": {"type": "string"},
                        "status": STATUS,
                        "values": {"type": ["array", "null"], "items": {"type": ["number", "null"]}},
                        "window_start": JSON_TYPES["timestamp"],
                        "window_end": JSON_TYPES["timestamp"],
                        "hydrated_at": JSON_TYPES["timestamp"],
                    },
                },
            },
        },
    }
    return {
        "openapi": "3.1.0",
        "info": {"title": "Device feature store: online reads", "version": device.feature_set_version},
        "components": {
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer"},
                "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
            }
        },
        "paths": {
            DEVICES_PATH: _post(
                "Device objects, each with its status, and the projection they come from",
                {
                    "type": "object",
                    "required": ["device_ids"],
                    "properties": {"device_ids": DEVICE_IDS, "properties": {"type": "array", "items": {"enum": list(device.fields)}}},
                },
                devices_response,
            ),
            f"{MODELS_PREFIX}{{model}}{MODELS_SUFFIX}": {
                "parameters": [{"name": "model", "in": "path", "required": True, "schema": {"enum": models}}],
                **_post(
                    "A model's input vectors, its features in the model's order, on the version it is pinned to",
                    {
                        "type": "object",
                        "description": "device_ids, or Feast's request shape: entities.device_id and features",
                        "properties": {
                            "device_ids": DEVICE_IDS,
                            "entities": {"type": "object", "properties": {"device_id": DEVICE_IDS}},
                            "features": {"type": "array", "items": {"type": "string"}},
                        },
                    },
                    vectors_response,
                ),
            },
            "/healthz": {"get": {"summary": "The process is up", "responses": {"200": {"description": "up"}}}},
            "/readyz": {
                "get": {
                    "summary": "Redis reachable and a projection present, with its age",
                    "responses": {"200": {"description": "ready"}, "503": {"description": "not ready, with the reason"}},
                }
            },
            "/metrics": {"get": {"summary": "Prometheus metrics", "responses": {"200": {"description": "text exposition"}}}},
        },
    }
