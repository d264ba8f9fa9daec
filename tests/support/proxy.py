"""A stand-in HTTPS proxy (``CONNECT`` tunnels) on loopback that notes every tunnel it opens.

What corporate proxies in front of API servers do for HTTPS: the client asks
``CONNECT host:port``, the proxy answers 200 and pipes bytes both ways; TLS
runs end to end through it. ``tunnels`` lists the targets, one per connection.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field


@dataclass
class ConnectProxy:
    url: str = ""
    tunnels: list[str] = field(default_factory=list)


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except ConnectionError:
        pass
    finally:
        writer.close()


@contextlib.asynccontextmanager
async def connect_proxy() -> AsyncIterator[ConnectProxy]:
    proxy = ConnectProxy()
    handlers: set[asyncio.Task[None]] = set()

    async def tunnel(client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        handlers.add(task)
        try:
            head = await client_r.readuntil(b"\r\n\r\n")
            method, target, _ = head.split(b"\r\n", 1)[0].decode().split(" ", 2)
            if method != "CONNECT":
                client_w.write(b"HTTP/1.1 405 Method Not Allowed\r\ncontent-length: 0\r\n\r\n")
                return
            proxy.tunnels.append(target)
            host, port = target.rsplit(":", 1)
            server_r, server_w = await asyncio.open_connection(host, int(port))
            client_w.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
            await asyncio.gather(_pipe(client_r, server_w), _pipe(server_r, client_w))
        finally:
            client_w.close()
            handlers.discard(task)

    server = await asyncio.start_server(tunnel, "127.0.0.1", 0)
    host, port = server.sockets[0].getsockname()[:2]
    proxy.url = f"http://{host}:{port}"
    try:
        yield proxy
    finally:
        server.close()
        for task in list(handlers):
            task.cancel()
        await asyncio.gather(*handlers, return_exceptions=True)
        await server.wait_closed()
