"""grok2api pool-parser plugin in Python: proxy-pool APIs that answer plain text, one proxy per line.

Accepted lines: `host:port`, `host:port:user:password`, `user:password@host:port`, or a URL with a scheme
(`socks5://host:port`). Blank lines and lines starting with `#` are skipped. An answer that is JSON with an
error code (`{"code": 1, "msg": "..."}`, as many pool APIs send on errors) is an error, as is a non-2xx status.

Config ([plugins.config.NAME] in setting.toml):
  scheme = "http"        # for lines without one
  label = "text-pool"    # label of every proxy (optional)
  ttl_s = 0              # expiry: now + ttl_s seconds (0: none); needs the clock the host's empty WASI gives
"""

import json
import time

from componentize_py_types import Err
from wit_world import exports
from wit_world.imports import host
from wit_world.imports.types import PluginInfo, ProxySpec

CONFIG = {"scheme": "http", "label": None, "ttl_s": 0}
SCHEMES = ("http", "https", "socks5", "socks5h")


def spec(**kw):
    base = dict(url=None, scheme=None, host=None, port=None, username=None, password=None,
                expires_at_ms=None, label=None)
    base.update(kw)
    return ProxySpec(**base)


def parse_line(line, n):
    if "://" in line:
        return spec(url=line)
    user = password = None
    if "@" in line:
        cred, line = line.rsplit("@", 1)
        user, _, password = cred.partition(":")
    parts = line.split(":")
    if len(parts) == 4 and user is None:
        parts, (user, password) = parts[:2], parts[2:]
    if len(parts) != 2 or not parts[0]:
        raise Err(f"line {n}: expected host:port, got {line[:60]!r}")
    try:
        port = int(parts[1])
    except ValueError:
        raise Err(f"line {n}: `{parts[1][:20]}` is not a port")
    if not 0 < port < 65536:
        raise Err(f"line {n}: port {port} out of range")
    return spec(host=parts[0], port=port, scheme=CONFIG["scheme"], username=user or None,
                password=password or None)


class Lifecycle(exports.Lifecycle):
    def describe(self):
        return PluginInfo(name="text-pool", version="0.1.0",
                          description="plain-text proxy lists, one per line (Python)")

    def init(self, config):
        try:
            c = json.loads(config or "{}")
        except ValueError as e:
            raise Err(f"invalid config: {e}")
        unknown = set(c) - set(CONFIG)
        if unknown:
            raise Err(f"unknown config keys: {', '.join(sorted(unknown))}")
        CONFIG.update(c)
        if CONFIG["scheme"] not in SCHEMES:
            raise Err(f"scheme must be one of {', '.join(SCHEMES)}")


class Parser(exports.Parser):
    def parse(self, source_url, status, content_type, body):
        if not 200 <= status < 300:
            raise Err(f"pool API answered HTTP {status}")
        text = body.decode("utf-8", "replace").strip()
        if text.startswith("{"):
            try:
                doc = json.loads(text)
            except ValueError:
                doc = None
            if isinstance(doc, dict):
                raise Err(f"pool API error {doc.get('code')}: {doc.get('msg') or doc.get('message') or ''}")
        expires = None
        if CONFIG["ttl_s"]:
            expires = int(time.time() * 1000) + int(CONFIG["ttl_s"]) * 1000
        out = []
        for n, line in enumerate(text.splitlines(), 1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            s = parse_line(line, n)
            s.expires_at_ms = expires
            s.label = CONFIG["label"]
            out.append(s)
        if not out:
            host.log(host.Level.WARN, "pool answer had no proxies")
        return out
