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

An API server that sheds load (429, or a 5xx during a restart) says when to
come back in ``Retry-After``. Like client-go, ``call`` waits that long and
asks again, up to ``RETRIES`` times within its own deadline; what still fails
raises an ``ApiError`` whose ``retry_after`` tells the caller's retry loop the
least it must wait (the watch honours it too).
"""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import Awaitable, Callable, Collection, Mapping
from typing import Any

import aiohttp

from gpuid.errors import ApiError, ExpiredError

Obj = dict[str, Any]
Method = Callable[..., Awaitable[Any]]
TRANSIENT_STATUSES = frozenset({408, 409, 410, 429})
REQUEST_SECONDS = 30.0  # one request and its answer; watches pass their own timeouts
RETRIES = 10  # answers with Retry-After that ``call`` waits out before giving up (client-go's default)
RETRY_AFTER_CAP = 60.0  # a Retry-After beyond this is a server bug, not advice
_BODY_EXCERPT = 200


def is_transient(status: int) -> bool:
    """Whether an answer with this HTTP status may succeed when asked again."""
    return status >= 500 or status in TRANSIENT_STATUSES


def retry_after(status: int, headers: Mapping[str, str] | None) -> float | None:
    """Seconds the server asked us to wait (``Retry-After`` on a 429 or 5xx), at most ``RETRY_AFTER_CAP``.

    Kubernetes sends whole seconds; an HTTP-date or a negative value is read as "no advice".
    """
    if headers is None or not (status == 429 or status >= 500):
        return None
    try:
        seconds = float(headers.get("Retry-After", ""))
    except ValueError:
        return None
    return min(seconds, RETRY_AFTER_CAP) if seconds >= 0 else None


def pause(seconds: float) -> float:
    """How long to wait when asked to wait ``seconds``: a little more, so callers told together spread out."""
    return seconds + random.uniform(0, min(1.0, seconds / 4 + 0.1))  # noqa: S311 - jitter, not crypto


def status_error(status: int, body: bytes, what: str, headers: Mapping[str, str] | None = None) -> ApiError:
    """The error for a non-2xx answer; a 410 is an ``ExpiredError`` (the caller re-lists)."""
    cls = ExpiredError if status == 410 else ApiError
    text = body[:_BODY_EXCERPT].decode("utf-8", "replace").strip()
    return cls(
        f"{what}: HTTP {status}: {text}",
        status=status,
        transient=is_transient(status),
        retry_after=retry_after(status, headers),
    )


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
    raise status_error(resp.status, body, what, resp.headers)


async def call(
    method: Method,
    *args: Any,
    what: str,
    absent: Collection[int] = (),
    seconds: float = REQUEST_SECONDS,
    **kwargs: Any,
) -> Obj | None:
    """One request and its JSON object; None when the answer's status is in ``absent``.

    The whole exchange, waits for ``Retry-After`` included, runs under
    ``seconds``; a silent connection is a transient ``ApiError`` like any
    other transport failure.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    for attempt in range(RETRIES + 1):
        left = deadline - loop.time()
        try:
            async with asyncio.timeout(left):
                timeout = aiohttp.ClientTimeout(total=left)
                resp = await method(*args, **kwargs, _preload_content=False, _request_timeout=timeout)
                async with resp:
                    body = await resp.read()
        except (aiohttp.ClientError, OSError, TimeoutError) as e:
            raise transport_error(e, what) from None
        if resp.status in absent:
            return None
        if resp.status < 300:
            break
        error = status_error(resp.status, body, what, resp.headers)
        wait = None if error.retry_after is None else pause(error.retry_after)
        if wait is None or attempt == RETRIES or loop.time() + wait >= deadline:
            raise error
        await asyncio.sleep(wait)
    try:
        data = json.loads(body)
    except ValueError:
        data = None
    if not isinstance(data, dict):
        raise ApiError(f"{what}: the answer is not a JSON object", transient=True)
    return data
