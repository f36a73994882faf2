"""`fs-serve`: start the online feature server.

    fs-serve [--host 127.0.0.1] [--port 8000] [--redis-url URL] [--feature-set-version v1]

Redis: `--redis-url`, else REDIS_URL, else the embedded server `make run` started. Keys:
FS_SERVE_API_KEYS (comma-separated) and/or FS_SERVE_API_KEYS_FILE (one a line, read again when it
changes). Without either the server refuses to start, unless `--no-auth` on a loopback address.
"""

from __future__ import annotations

import argparse
import gc
import ipaddress
import os
import sys

from fs_domain.tables import SERVED_VALUES_TABLE
from fs_resources import settings
from fs_resources.embedded_redis import EmbeddedRedis, redact
from fs_resources.online import DEFAULT_TTL_SECONDS, OnlineStore, OnlineStoreUnavailable, UnknownFeatureSetVersion
from fs_resources.serving.keys import KEYS_FILE_SETTING, KEYS_SETTING, ApiKeys, ApiKeySettingsError
from fs_resources.serving.served_log import DEFAULT_LOG_SHARE, LOG_SHARE_SETTING, ServedValueLog, served_values_path


def _loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="fs-serve", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default=os.environ.get("FS_SERVE_HOST", "127.0.0.1"))
    parser.add_argument("--port", type=int, default=int(os.environ.get("FS_SERVE_PORT", "8000")))
    parser.add_argument("--redis-url", default=None)
    parser.add_argument("--feature-set-version", default=None, help="the Device object's version (else FS_FEATURE_SET_VERSION, else v1)")
    parser.add_argument("--model-versions", default=None, help="model=version,... (else FS_MODEL_VERSIONS, over the registry's pins)")
    parser.add_argument(
        "--ttl-seconds",
        type=int,
        default=int(os.environ.get("FS_ONLINE_TTL_SECONDS", DEFAULT_TTL_SECONDS)),
        help="the entries' time to live, as pre-hydration writes them (FS_ONLINE_TTL_SECONDS): past it, an older projection's devices are expired",
    )
    parser.add_argument("--redis-timeout", type=float, default=0.5, help="seconds before a Redis call is given up (503)")
    parser.add_argument("--no-auth", action="store_true", help="serve without API keys (loopback addresses only)")
    parser.add_argument(
        "--log-share",
        type=float,
        default=float(os.environ.get(LOG_SHARE_SETTING, DEFAULT_LOG_SHARE)),
        help=f"share of requests whose served values are logged to the {SERVED_VALUES_TABLE} table (0 turns it off)",
    )
    parser.add_argument("--log-level", default="warning")
    args = parser.parse_args(argv)

    try:
        keys = ApiKeys.from_environment()
    except ApiKeySettingsError as exc:
        parser.error(str(exc))
    if not keys.configured and not args.no_auth:
        parser.error(f"no API keys: set {KEYS_SETTING} or {KEYS_FILE_SETTING} (or --no-auth on a loopback address)")
    if args.no_auth and not _loopback(args.host):
        parser.error(f"--no-auth serves anyone who reaches {args.host}: only on a loopback address")
    url = args.redis_url or os.environ.get("REDIS_URL") or EmbeddedRedis().url()
    if url is None:
        parser.error("no Redis: give --redis-url or REDIS_URL, or start the embedded server (make run)")
    try:
        store = OnlineStore.connect(url, args.feature_set_version, socket_timeout=args.redis_timeout, model_versions=args.model_versions)
    except (UnknownFeatureSetVersion, OnlineStoreUnavailable, ValueError) as exc:
        parser.error(str(exc))

    import uvicorn

    from fs_resources.serving.app import FeatureServer, create_app

    root = settings.tables_root()
    log = None
    if args.log_share > 0:
        if "://" in root and not root.startswith("file://"):
            print(f"the served-value log writes local tables only; {root} is not: not logging", file=sys.stderr)
        else:
            log = ServedValueLog(served_values_path(root.removeprefix("file://")), share=args.log_share)
    server = FeatureServer(store, url, None if args.no_auth else keys, ttl_seconds=args.ttl_seconds, timeout=args.redis_timeout, log=log)
    print(f"fs-serve on http://{args.host}:{args.port} over {redact(url)} ({store.version}); OpenAPI at /openapi.json", flush=True)
    # Everything loaded so far lives as long as the process: frozen, Python's collector no longer walks
    # it on each full collection, a pause every request behind it waited for.
    gc.freeze()
    uvicorn.run(
        create_app(server), host=args.host, port=args.port, loop="uvloop", http="httptools", log_level=args.log_level, access_log=False
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
