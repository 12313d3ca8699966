"""Self-signed TLS certificates for sandbox hosts that offer STARTTLS.

A certificate is made at start with the ``openssl`` command (no extra Python
dependency), valid for two days, in a temporary directory that is deleted as
soon as the key is loaded into the :class:`ssl.SSLContext`. Clients must not
validate it (aiosmtplib: ``validate_certs=False``).
"""

from __future__ import annotations

import shutil
import ssl
import subprocess
import tempfile
from pathlib import Path

from streams.errors import SandboxError

__all__ = ["server_context"]

_OPENSSL_TIMEOUT = 60.0


def server_context(common_name: str) -> ssl.SSLContext:
    """A server TLS context with a fresh self-signed certificate for ``common_name``.

    Blocking (it runs ``openssl``): call it with :func:`asyncio.to_thread`.

    Args:
        common_name: the host name put in the certificate's CN and subjectAltName.

    Returns:
        A TLS 1.2+ server context holding the certificate and its key.

    Raises:
        SandboxError: ``openssl`` is missing or failed.
    """
    openssl = shutil.which("openssl")
    if openssl is None:
        raise SandboxError(
            f"The openssl command is needed to make a certificate for {common_name} "
            "(starttls = true); install OpenSSL or set starttls = false in the world file."
        )
    with tempfile.TemporaryDirectory(prefix="mxprobe-sandbox-tls-") as directory:
        key, cert = Path(directory, "key.pem"), Path(directory, "cert.pem")
        command = [
            *(openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2"),
            *("-subj", f"/CN={common_name}", "-addext", f"subjectAltName=DNS:{common_name}"),
            *("-keyout", str(key), "-out", str(cert)),
        ]
        try:
            subprocess.run(
                command,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                check=True,
                timeout=_OPENSSL_TIMEOUT,
            )
        except (OSError, subprocess.SubprocessError) as exc:
            detail = getattr(exc, "stderr", b"") or b""
            reason = detail.decode("utf-8", "replace").strip() or str(exc)
            raise SandboxError(
                f"openssl could not make a certificate for {common_name} ({reason}); "
                "check the OpenSSL installation or set starttls = false in the world file."
            ) from exc
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.load_cert_chain(cert, key)
    return context
