"""Where a request asks `fs-serve` (its request routes) and how much one request may ask."""

DEVICES_PATH = "/v1/devices:get"
MODELS_PREFIX, MODELS_SUFFIX = "/v1/models/", ":get"  # the model's name between them

MAX_DEVICES = 1000  # device ids in one request: one Lua read of the online store
MAX_BODY_BYTES = 256 * 1024
