"""The simulated API server's certificate: trusted by a client that is given it, refused otherwise."""

from __future__ import annotations

import asyncio
import ssl

import pytest

from gpuid.sim import tls


async def test_certificate_verifies_for_127_0_0_1() -> None:
    cert, key = tls.self_signed(tls.HOST)

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"hello")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(answer, tls.HOST, 0, ssl=tls.server_context(cert, key))
    port = server.sockets[0].getsockname()[1]
    try:
        trusting = ssl.create_default_context(cadata=cert.decode())  # checks the name (IP SAN) too
        reader, writer = await asyncio.open_connection(tls.HOST, port, ssl=trusting)
        assert await reader.read() == b"hello"
        writer.close()
        with pytest.raises(ssl.SSLCertVerificationError):  # a client that was not given it refuses
            await asyncio.open_connection(tls.HOST, port, ssl=ssl.create_default_context())
    finally:
        server.close()
        await server.wait_closed()
