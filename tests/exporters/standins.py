"""Stand-in peers that misbehave on purpose: endpoints that never answer, an S3 that refuses.

``silent_endpoint`` accepts TCP connections and reads what is sent, but never
answers (except requests of the methods it is given answers for, so a client
can open and then stall on its first upload) — the endpoint that once hung an
S3 lane forever.
``refusing_s3`` answers every write with one S3 error document, as a real
store does, so botocore parses it exactly as it would AWS's.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from aiohttp import web

from tests.support.services import serving


@dataclass
class Silent:
    url: str
    received: list[bytes] = field(default_factory=list)

    def requests(self) -> list[bytes]:
        """The request lines and headers of every request seen."""
        return [chunk.split(b"\r\n\r\n", 1)[0] for chunk in self.received if b"HTTP/1.1\r\n" in chunk]


@contextlib.asynccontextmanager
async def silent_endpoint(answers: dict[bytes, bytes] | None = None) -> AsyncIterator[Silent]:
    """A loopback TCP endpoint that never answers, but requests whose method ``answers`` maps to a reply."""
    writers: list[asyncio.StreamWriter] = []
    silent = Silent("")

    async def hold(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writers.append(writer)
        with contextlib.suppress(ConnectionError):
            while chunk := await reader.read(1 << 16):
                silent.received.append(chunk)
                method = chunk.split(b" ", 1)[0]
                if answers and method in answers and b"HTTP/1.1\r\n" in chunk:
                    writer.write(answers[method])

    server = await asyncio.start_server(hold, "127.0.0.1", 0)
    silent.url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    try:
        yield silent
    finally:
        server.close()
        for writer in writers:
            writer.close()
        await server.wait_closed()


def http_answer(body: bytes = b"", status: str = "200 OK") -> bytes:
    return b"HTTP/1.1 %s\r\nContent-Length: %d\r\n\r\n%s" % (status.encode(), len(body), body)


BUCKET_EXISTS = {b"HEAD": http_answer()}


def s3_error_document(code: str, message: str = "refused by the stand-in") -> str:
    return (
        '<?xml version="1.0" encoding="UTF-8"?>'
        f"<Error><Code>{code}</Code><Message>{message}</Message><RequestId>r1</RequestId></Error>"
    )


@contextlib.asynccontextmanager
async def refusing_s3(status: int, code: str) -> AsyncIterator[str]:
    """An S3 endpoint whose bucket exists (HEAD 200) and that answers every write with ``status``/``code``."""

    async def handle(request: web.Request) -> web.Response:
        if request.method == "HEAD":
            return web.Response(status=200)
        await request.read()
        return web.Response(status=status, text=s3_error_document(code), content_type="application/xml")

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    async with serving(app) as url:
        yield url
