"""What one request may ask of `fs-serve`."""

MAX_DEVICES = 1000  # device ids in one request: one Lua read of the online store
MAX_BODY_BYTES = 256 * 1024
