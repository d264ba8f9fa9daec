"""``POSTGRES_DSN`` checked at start-up by the driver's own rules, so a bad one never fails later.

A DSN is parsed by asyncpg only when the exporter first connects; a bad port,
a broken IPv6 literal or a stray query parameter would then surface hours
into the run as a traceback. ``check_dsn`` runs asyncpg's parser up front
(imported lazily: only with the ``postgres`` extra) and turns its verdict into
one ``ConfigError`` line with every password scrubbed. What it returns is
safe to log: where gpuid connects (every host of a multi-host DSN) and the
secrets to keep out of messages. asyncpg's parser is internal API, so it is
called with keyword arguments taken from its own signature.
"""

from __future__ import annotations

import inspect
import re
from dataclasses import dataclass
from urllib.parse import unquote

from gpuid.errors import ConfigError

_SCHEME = re.compile(r"postgres(?:ql)?://", re.IGNORECASE)
_QUERY_PASSWORD = re.compile(r"(?:^|[?&])(?:password|sslpassword)=([^&#]*)")


@dataclass(frozen=True)
class DsnInfo:
    target: str  # user@host:port[,host:port]/database: no password
    secrets: tuple[str, ...]


def dsn_secrets(dsn: str) -> tuple[str, ...]:
    """Every spelling of a password the DSN carries (userinfo or query), raw and percent-decoded."""
    netloc = dsn.split("://", 1)[-1].split("/", 1)[0]
    userinfo = netloc.rpartition("@")[0]
    found = [userinfo.partition(":")[2], *_QUERY_PASSWORD.findall(dsn)]
    return tuple(dict.fromkeys(s for raw in found if raw for s in (raw, unquote(raw))))


def _scrub(text: str, secrets: tuple[str, ...]) -> str:
    for secret in sorted(secrets, key=len, reverse=True):
        text = text.replace(secret, "***")
    return " ".join(text.split())  # one line


def _fallback_target(dsn: str) -> str:
    """Without asyncpg: the host part and database as written, the password cut off."""
    netloc, _, path = dsn.split("://", 1)[-1].partition("/")
    user, _, hosts = netloc.rpartition("@")
    user = user.partition(":")[0]
    where = f"{hosts or 'localhost'}/{path.split('?', 1)[0]}"
    return f"{unquote(user)}@{where}" if user else where


def check_dsn(dsn: str, sslmode: str | None) -> DsnInfo:
    """Parse ``dsn`` as asyncpg will; ``ConfigError`` (no password in it) when it would not connect."""
    secrets = dsn_secrets(dsn)
    if not _SCHEME.match(dsn):
        raise ConfigError("POSTGRES_DSN is invalid: it must start with postgresql://")
    try:
        from asyncpg import connect_utils
    except ImportError:  # no postgres extra: the exporter cannot run anyway and says so itself
        return DsnInfo(_fallback_target(dsn), secrets)
    parse = connect_utils._parse_connect_dsn_and_args
    kwargs = dict.fromkeys(inspect.signature(parse).parameters) | {"dsn": dsn, "ssl": sslmode}
    try:
        addrs, params = parse(**kwargs)
    except Exception as e:  # whatever the parser refuses is a configuration error
        raise ConfigError(f"POSTGRES_DSN is invalid: {_scrub(str(e) or type(e).__name__, secrets)}") from None
    hosts = []
    for addr in addrs:
        if isinstance(addr, str):  # a Unix socket path
            hosts.append(addr)
            continue
        host, port = addr
        if not 1 <= int(port) <= 65535:
            raise ConfigError(f"POSTGRES_DSN is invalid: port {port} of {host} is not between 1 and 65535")
        hosts.append(f"[{host}]:{port}" if ":" in host else f"{host}:{port}")
    extra = (params.password,) if getattr(params, "password", None) else ()
    user = getattr(params, "user", "") or ""
    where = f"{','.join(hosts)}/{getattr(params, 'database', '') or ''}"
    return DsnInfo(f"{user}@{where}" if user else where, tuple(dict.fromkeys((*secrets, *extra))))
