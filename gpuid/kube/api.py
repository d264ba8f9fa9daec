"""One way to call the API server, with one rule for which failures are worth retrying.

kubernetes_asyncio can return models, raise ``ApiException``, or hand back
the raw aiohttp response. gpuid always takes the raw response
(``_preload_content=False``): JSON is decoded once, only what is needed is
kept, and a 404 or 409 can be an answer instead of an exception. The watch,
the Lease, node labels and bug-report status all go through ``call`` or
``open_stream``, so "is this failure transient" has a single answer here:
transport errors, 5xx, 408, 409, 410 and 429 are; any other status (400, 401,
403, 404, 422) is not, and retrying it forever would only hide a bug or a
missing RBAC rule.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, Collection
from typing import Any

import aiohttp

from gpuid.errors import ApiError, ExpiredError

Obj = dict[str, Any]
Method = Callable[..., Awaitable[Any]]
TRANSIENT_STATUSES = frozenset({408, 409, 410, 429})
REQUEST_SECONDS = 30.0  # one request and its answer; watches pass their own timeouts
_BODY_EXCERPT = 200


def is_transient(status: int) -> bool:
    """Whether an answer with this HTTP status may succeed when asked again."""
    return status >= 500 or status in TRANSIENT_STATUSES


def status_error(status: int, body: bytes, what: str) -> ApiError:
    """The error for a non-2xx answer; a 410 is an ``ExpiredError`` (the caller re-lists)."""
    cls = ExpiredError if status == 410 else ApiError
    text = body[:_BODY_EXCERPT].decode("utf-8", "replace").strip()
    return cls(f"{what}: HTTP {status}: {text}", status=status, transient=is_transient(status))


def transport_error(e: BaseException, what: str) -> ApiError:
    """A request that got no answer at all: always transient."""
    return ApiError(f"{what}: {type(e).__name__}: {e}".rstrip(": "), transient=True)


async def open_stream(
    method: Method, *args: Any, what: str, timeout: aiohttp.ClientTimeout, **kwargs: Any
) -> Any:
    """Send a request whose answer is read as a stream (a watch, a large list).

    Returns the aiohttp response once its status is 2xx; the caller reads and
    releases it. Any other status becomes ``status_error`` after its (bounded)
    body is read.
    """
    try:
        resp = await method(*args, **kwargs, _preload_content=False, _request_timeout=timeout)
        if resp.status < 300:
            return resp
        async with resp:
            body = await resp.content.read(_BODY_EXCERPT * 4)
    except (aiohttp.ClientError, OSError, TimeoutError) as e:
        raise transport_error(e, what) from None
    raise status_error(resp.status, body, what)


async def call(
    method: Method,
    *args: Any,
    what: str,
    absent: Collection[int] = (),
    seconds: float = REQUEST_SECONDS,
    **kwargs: Any,
) -> Obj | None:
    """One request and its JSON object; None when the answer's status is in ``absent``.

    The whole exchange runs under ``seconds``; a silent connection is a
    transient ``ApiError`` like any other transport failure.
    """
    try:
        async with asyncio.timeout(seconds):
            resp = await method(
                *args, **kwargs, _preload_content=False, _request_timeout=aiohttp.ClientTimeout(total=seconds)
            )
            async with resp:
                body = await resp.read()
    except (aiohttp.ClientError, OSError, TimeoutError) as e:
        raise transport_error(e, what) from None
    if resp.status in absent:
        return None
    if resp.status >= 300:
        raise status_error(resp.status, body, what)
    try:
        data = json.loads(body)
    except ValueError:
        data = None
    if not isinstance(data, dict):
        raise ApiError(f"{what}: the answer is not a JSON object", transient=True)
    return data
