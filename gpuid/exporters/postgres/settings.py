"""Settings of the PostgreSQL exporter and of ``gpuid inventory``: where to connect, which tables.

Table and schema names are validated as identifiers here, before they are
ever quoted into SQL. Secrets (the password, a DSN that embeds one) are
``repr=False``, never echoed in an error, and ``secrets()`` lists them so
every error message can be scrubbed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from gpuid.errors import ConfigError
from gpuid.exporters.postgres.dsn import check_dsn, dsn_secrets
from gpuid.options import HOUR, Env

_IDENT = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
_LOOPBACK = ("localhost", "127.0.0.1", "::1")
SSLMODES = ("disable", "allow", "prefer", "require", "verify-ca", "verify-full")


def _identifier(env: Env, name: str) -> str:
    value = env.str(name)
    if not _IDENT.match(value):
        raise ConfigError(f"{name}={value!r} is invalid: use lowercase letters, digits and _ (max 63)")
    return value


@dataclass(frozen=True)
class PostgresSettings:
    host: str = "localhost"
    port: int = 5432
    database: str = "gpuid"
    user: str = "gpuid"
    password: str = field(default="", repr=False)
    dsn: str = field(default="", repr=False)  # may embed a password
    dsn_target: str = ""  # where the DSN points, as parsed at start-up: safe to log
    dsn_secrets: tuple[str, ...] = field(default=(), repr=False)
    sslmode: str | None = None  # None = whatever the DSN (or libpq's default) says
    schema: str = "public"
    readings_table: str = "gpu_readings"
    inventory_table: str = "gpu_inventory"
    moves_table: str = "gpu_moves"
    auto_migrate: bool = False  # off: a DBA may grant INSERT/UPDATE only
    pool_size: int = 4
    batch_size: int = 2_000  # ingest per row is ~1.5x faster than at 500: fixed costs per batch amortised
    timeout: float = 10.0

    @classmethod
    def from_env(cls, env: Env) -> PostgresSettings:
        dsn = env.str("POSTGRES_DSN")
        host = env.str("POSTGRES_HOST")
        if not dsn and not host:
            raise ConfigError("POSTGRES_HOST (or POSTGRES_DSN) is required by the postgres exporter")
        port = env.int("POSTGRES_PORT", minimum=1, maximum=65535)
        sslmode = env.str("POSTGRES_SSLMODE").lower() or None
        if sslmode is not None and sslmode not in SSLMODES:
            raise ConfigError(f"POSTGRES_SSLMODE={sslmode!r} is invalid: choose one of {', '.join(SSLMODES)}")
        if sslmode is None and not dsn:
            sslmode = "prefer" if host in _LOOPBACK or host.startswith("/") else "require"
        checked = check_dsn(dsn, sslmode) if dsn else None
        tables = {
            "POSTGRES_READINGS_TABLE": _identifier(env, "POSTGRES_READINGS_TABLE"),
            "POSTGRES_INVENTORY_TABLE": _identifier(env, "POSTGRES_INVENTORY_TABLE"),
            "POSTGRES_MOVES_TABLE": _identifier(env, "POSTGRES_MOVES_TABLE"),
        }
        if len(set(tables.values())) != len(tables):
            raise ConfigError(f"{', '.join(tables)} must name three different tables")
        return cls(
            host=host,
            port=port,
            database=env.str("POSTGRES_DB"),
            user=env.str("POSTGRES_USER"),
            password=env.str("POSTGRES_PASSWORD"),
            dsn=dsn,
            dsn_target=checked.target if checked else "",
            dsn_secrets=checked.secrets if checked else (),
            sslmode=sslmode,
            schema=_identifier(env, "POSTGRES_SCHEMA"),
            readings_table=tables["POSTGRES_READINGS_TABLE"],
            inventory_table=tables["POSTGRES_INVENTORY_TABLE"],
            moves_table=tables["POSTGRES_MOVES_TABLE"],
            auto_migrate=env.bool("POSTGRES_AUTO_MIGRATE"),
            pool_size=env.int("POSTGRES_POOL_SIZE", minimum=1, maximum=100),  # max_connections is 100
            batch_size=env.int("POSTGRES_BATCH_SIZE", minimum=1, maximum=100_000),
            timeout=env.duration("POSTGRES_TIMEOUT", minimum=0.1, maximum=HOUR),
        )

    @property
    def target(self) -> str:
        """Where we connect, safe to log: no password."""
        if self.dsn:
            return self.dsn_target or "the host in POSTGRES_DSN"
        return f"{self.user}@{self.host}:{self.port}/{self.database}"

    def secrets(self) -> tuple[str, ...]:
        """Strings that must never reach a log line or an error message."""
        found = [self.password, *(self.dsn_secrets or dsn_secrets(self.dsn))]
        return tuple(s for s in found if s)
