"""HTTP exporter: POST each batch as a JSON array to a collector.

For inventories that already have an ingestion API (a CMDB, a webhook, a
queue gateway). The body is ``[record, ...]`` with every field; the
``Idempotency-Key`` header is a digest of the body, so a receiver can drop a
batch it has already taken when delivery retries it. A ``gpu_changed`` record
carries ``"event": "gpu_changed"``; readings are sent as they always were.

What a status costs: 408, 429, 5xx and network trouble are transient; 400,
413 and 422 refuse *content* (``RecordError``: delivery bisects the batch so
only the records the collector refuses are dropped); 401, 403, 404, 405, any
other 4xx and any redirect are *lane* errors (token, URL: the lane parks and
keeps every record). A redirect is never followed: a batch sent to another
origin would carry the token there, and a 3xx is not an acknowledgement.
The token, and the endpoint's query and fragment, never appear in a message:
the endpoint is shown as ``scheme://host[:port]/path`` (userinfo is refused).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import aiohttp

from gpuid import __version__
from gpuid.errors import ConfigError, ExportError, LaneError, RecordError
from gpuid.exporters import ExporterSettings
from gpuid.options import HOUR, Env
from gpuid.records import SCHEMA_VERSION, Record, record_dict

_HINTS = {401: "check HTTP_AUTH_TOKEN", 403: "check HTTP_AUTH_TOKEN", 404: "check HTTP_ENDPOINT"}
_HINTS[405] = _HINTS[404]
_RECORD_STATUSES = (400, 413, 422)  # the collector refuses what was sent, not who sent it


def safe_url(url: str) -> str:
    """``url`` without userinfo, query or fragment: what messages may show of it."""
    parts = urlsplit(url)
    if not parts.scheme:  # a relative redirect target
        return parts.path
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    try:
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        port = ""
    return f"{parts.scheme}://{host}{port}{parts.path}"


@dataclass(frozen=True)
class HttpSettings:
    endpoint: str = field(repr=False)  # its query string may hold a credential
    timeout: float = 10.0
    auth_token: str = field(default="", repr=False)

    @classmethod
    def from_env(cls, env: Env) -> HttpSettings:
        endpoint = env.str("HTTP_ENDPOINT")
        if not endpoint:
            raise ConfigError("HTTP_ENDPOINT is required by the http exporter")
        parts = urlsplit(endpoint)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigError(f"HTTP_ENDPOINT={safe_url(endpoint)!r} is invalid: use an http(s):// URL")
        if parts.username or parts.password:
            raise ConfigError("HTTP_ENDPOINT must not embed credentials: use HTTP_AUTH_TOKEN")
        return cls(
            endpoint=endpoint,
            timeout=env.duration("HTTP_TIMEOUT", minimum=0.1, maximum=HOUR),
            auth_token=env.str("HTTP_AUTH_TOKEN"),
        )

    @property
    def target(self) -> str:
        return safe_url(self.endpoint)

    def redact(self, text: str) -> str:
        """``text`` with the endpoint shown safely and every secret part of it, and the token, masked."""
        text = text.replace(self.endpoint, self.target)
        parts = urlsplit(self.endpoint)
        for secret in (self.auth_token, parts.query, parts.fragment):
            if secret:
                text = text.replace(secret, "***")
        return text


class HttpExporter:
    name = "http"

    def __init__(self, config: HttpSettings) -> None:
        self.config = config
        self.timeout = config.timeout  # one POST, from connecting to the last byte of the answer
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

    async def export(self, batch: Sequence[Record]) -> None:
        if self._session is None:
            raise ExportError("http: not connected")
        body = json.dumps([record_dict(r) for r in batch], separators=(",", ":")).encode()
        headers = {
            "Content-Type": "application/json",
            "Idempotency-Key": hashlib.sha256(body).hexdigest(),
            "X-Gpuid-Record-Count": str(len(batch)),
        }
        redact, where = self.config.redact, self.config.target
        try:
            async with self._session.post(
                self.config.endpoint, data=body, headers=headers, allow_redirects=False
            ) as response:
                status = response.status
                if status < 300:
                    return
                location = safe_url(response.headers.get("Location", ""))
                head = await response.content.read(1024)  # a reason, not the whole of a hostile body
                text = redact(head.decode(errors="replace")[:200].strip())
        except Exception as e:  # transport trouble, timeouts; any message may quote the URL: redacted
            raise ExportError(f"http {where}: {type(e).__name__}: {redact(str(e))}") from None
        if status < 400:
            raise LaneError(
                f"http {where}: status {status} to {redact(location)}: redirects are not followed;"
                " set HTTP_ENDPOINT to the final URL"
            )
        message = f"http {where}: status {status} {text}".rstrip()
        if status in (408, 429) or status >= 500:
            raise ExportError(message)
        if status in _RECORD_STATUSES:
            raise RecordError(f"{message}; the collector refused the content")
        raise LaneError(message + (f"; {_HINTS[status]}" if status in _HINTS else ""))

    async def health(self) -> bool:
        return self._session is not None and not self._session.closed

    async def close(self) -> None:
        session, self._session = self._session, None
        if session is not None:
            await session.close()
