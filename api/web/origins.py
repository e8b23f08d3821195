"""Where a request comes from and where it is addressed: its host name, its page's origin (compared
normalised: scheme, lowercased host, default port dropped), and its client address behind trusted
proxies. The guard (api/web/guard.py) decides with these."""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit

from litestar.types import Scope

from api.store.keys import ApiKey, normalize_origin
from api.store.limits import Doorkeeper, Networks
from index.errors import ConfigError

LOOPBACK_HOSTS = frozenset({"localhost", "127.0.0.1", "::1"})


def host_name(host: str) -> str:
    """``[::1]:8000`` -> ``::1``; ``LocalHost:8000`` -> ``localhost``; ``127.0.0.1`` -> ``127.0.0.1``."""
    host = host.strip().lower()
    if host.startswith("["):
        end = host.find("]")
        return host[1:end] if end > 0 else host
    name, colon, port = host.rpartition(":")
    return name if colon and port.isdigit() else host


def normalized_origin(origin: str) -> str | None:
    """An ``Origin`` header in the form keys store (see ``normalize_origin``); None when unreadable
    (``null`` from a sandboxed frame or a file, garbage)."""
    try:
        return normalize_origin(origin)
    except (ConfigError, ValueError):
        return None


def origin_allowed(key: ApiKey | None, origin: str | None, own: str | None) -> bool:
    if origin is None:
        return False
    if origin == own:
        return True
    if key is None:
        return is_loopback_origin(origin)
    return origin in key.origins


def listed_origins(door: Doorkeeper) -> set[str]:
    return {origin for key in door.keys.active() for origin in key.origins}


def is_loopback_origin(origin: str) -> bool:
    try:
        parts = urlsplit(origin)
        host = parts.hostname or ""
    except ValueError:
        return False
    return parts.scheme in {"http", "https"} and host in LOOPBACK_HOSTS


def own_origin(scope: Scope, headers: dict[str, str]) -> str | None:
    """The origin of this service's own pages, as the request addresses it (normalised)."""
    host = headers.get("host", "")
    return normalized_origin(f"{scope.get('scheme', 'http')}://{host}") if host else None


def client_address(
    peer: str | None,
    forwarded_for: str | None,
    trusted: Networks,
) -> str:
    """The address a request came from: the peer, or, when the peer is a trusted proxy, the last address
    in ``X-Forwarded-For`` that is not itself a trusted proxy."""
    if not peer:
        return "unknown"
    if not trusted or not forwarded_for or not _is_trusted(peer, trusted):
        return peer
    for hop in reversed([h.strip() for h in forwarded_for.split(",") if h.strip()]):
        if not _is_trusted(hop, trusted):
            return hop
    return peer


def _is_trusted(address: str, trusted: Networks) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in network for network in trusted)
