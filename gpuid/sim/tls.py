"""TLS for the simulated API server: a throwaway CA-less self-signed certificate for 127.0.0.1.

Real API servers only speak HTTPS, and a TLS handshake plus encrypting every
exec frame is client CPU that a plain-HTTP simulation hides from the
benchmarks. ``SimApiServer(tls=True)`` serves HTTPS with a certificate made at
start with the ``openssl`` command and writes it into the kubeconfig as
``certificate-authority-data``, so the unmodified client verifies it exactly
as it verifies a cluster's CA. The key lives only in memory and in a
temporary directory removed before the server answers its first request.
"""

from __future__ import annotations

import shutil
import ssl
import subprocess
import tempfile
from pathlib import Path

HOST = "127.0.0.1"
_DAYS = 2


def self_signed(host: str = HOST) -> tuple[bytes, bytes]:
    """A PEM certificate valid for IP ``host`` (the subject alternative name clients check) and its key."""
    openssl = shutil.which("openssl")
    if openssl is None:
        raise RuntimeError("TLS for the simulated API server needs the openssl command on PATH")
    with tempfile.TemporaryDirectory(prefix="gpuid-sim-tls-") as tmp:
        cert, key = Path(tmp, "cert.pem"), Path(tmp, "key.pem")
        subprocess.run(
            [openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
             "-nodes", "-days", str(_DAYS), "-subj", "/CN=gpuid-sim", "-addext", f"subjectAltName=IP:{host}",
             "-keyout", str(key), "-out", str(cert)],
            check=True, capture_output=True, timeout=30,
        )  # fmt: skip
        return cert.read_bytes(), key.read_bytes()


def server_context(cert_pem: bytes, key_pem: bytes) -> ssl.SSLContext:
    """An ``SSLContext`` serving ``cert_pem``; ``load_cert_chain`` needs files, kept only while it reads."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    with tempfile.TemporaryDirectory(prefix="gpuid-sim-tls-") as tmp:
        cert, key = Path(tmp, "cert.pem"), Path(tmp, "key.pem")
        cert.write_bytes(cert_pem)
        key.touch(mode=0o600)
        key.write_bytes(key_pem)
        context.load_cert_chain(cert, key)
    return context
