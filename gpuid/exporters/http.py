"""HTTP exporter: POST each batch as a JSON array to a collector.

For inventories that already have an ingestion API (a CMDB, a webhook, a
queue gateway). The body is ``[record, ...]`` with every field; the
``Idempotency-Key`` header is a digest of the body, so a receiver can drop a
batch it has already taken when delivery retries it. A ``gpu_changed`` record
carries ``"event": "gpu_changed"``; readings are sent as they always were. 408/429/5xx and network
trouble are transient; any other 4xx (a bad token, a wrong URL) is permanent.
The bearer token is sent in a header and never appears in a message.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import aiohttp

from gpuid import __version__
from gpuid.errors import ConfigError, ExportError
from gpuid.exporters import ExporterSettings
from gpuid.options import Env
from gpuid.records import SCHEMA_VERSION, Record, record_dict

_HINTS = {401: "check HTTP_AUTH_TOKEN", 403: "check HTTP_AUTH_TOKEN", 404: "check HTTP_ENDPOINT"}


@dataclass(frozen=True)
class HttpSettings:
    endpoint: str
    timeout: float = 10.0
    auth_token: str = field(default="", repr=False)

    @classmethod
    def from_env(cls, env: Env) -> HttpSettings:
        endpoint = env.str("HTTP_ENDPOINT")
        if not endpoint:
            raise ConfigError("HTTP_ENDPOINT is required by the http exporter")
        parts = urlsplit(endpoint)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigError(f"HTTP_ENDPOINT={endpoint!r} is invalid: use an http(s):// URL")
        if parts.password:
            raise ConfigError("HTTP_ENDPOINT must not embed credentials: use HTTP_AUTH_TOKEN")
        return cls(
            endpoint=endpoint, timeout=env.duration("HTTP_TIMEOUT"), auth_token=env.str("HTTP_AUTH_TOKEN")
        )


class HttpExporter:
    name = "http"

    def __init__(self, config: HttpSettings) -> None:
        self.config = config
        self._session: aiohttp.ClientSession | None = None

    @classmethod
    def from_settings(cls, settings: ExporterSettings) -> HttpExporter:
        assert settings.http is not None  # parsed whenever http is selected
        return cls(settings.http)

    async def open(self) -> None:
        if self._session is None:
            headers = {"User-Agent": f"gpuid/{__version__}", "X-Gpuid-Schema-Version": str(SCHEMA_VERSION)}
            if self.config.auth_token:
                headers["Authorization"] = f"Bearer {self.config.auth_token}"
            self._session = aiohttp.ClientSession(
                headers=headers, timeout=aiohttp.ClientTimeout(total=self.config.timeout)
            )

    def _redact(self, text: str) -> str:
        token = self.config.auth_token
        return text.replace(token, "***") if token else text

    async def export(self, batch: Sequence[Record]) -> None:
        if self._session is None:
            raise ExportError("http: not connected", transient=True)
        body = json.dumps([record_dict(r) for r in batch], separators=(",", ":")).encode()
        headers = {
            "Content-Type": "application/json",
            "Idempotency-Key": hashlib.sha256(body).hexdigest(),
            "X-Gpuid-Record-Count": str(len(batch)),
        }
        where = self._redact(self.config.endpoint)
        try:
            async with self._session.post(self.config.endpoint, data=body, headers=headers) as response:
                if response.status < 300:
                    return
                text = self._redact((await response.text(errors="replace"))[:200].strip())
        except (aiohttp.ClientError, TimeoutError, OSError) as e:
            raise ExportError(
                f"http {where}: {type(e).__name__}: {self._redact(str(e))}", transient=True
            ) from None
        status = response.status
        transient = status >= 500 or status in (408, 429)
        hint = f"; {_HINTS[status]}" if status in _HINTS else ""
        raise ExportError(f"http {where}: status {status} {text}{hint}".rstrip(), transient=transient)

    async def health(self) -> bool:
        return self._session is not None and not self._session.closed

    async def close(self) -> None:
        session, self._session = self._session, None
        if session is not None:
            await session.close()
