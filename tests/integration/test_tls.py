"""The gateway serves HTTPS when a certificate and key are configured (issue 11 part 5)."""

from __future__ import annotations

import shutil
import ssl
import subprocess
from pathlib import Path

import httpx
import pytest

from rtm.devstack import start_gateway
from streams.settings import Settings
from tests.integration.conftest import free_port

pytestmark = pytest.mark.integration


@pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl not on the PATH")
def test_gateway_serves_https_only_with_a_configured_certificate(
    base_settings: Settings, tmp_path: Path
) -> None:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )
    settings = base_settings.but(
        {"api_port": free_port(), "api_tls_certfile": cert, "api_tls_keyfile": key}
    )
    child = start_gateway(settings)
    try:
        url = f"127.0.0.1:{settings.gateway.port}"
        trust = ssl.create_default_context(cafile=str(cert))
        resp = httpx.get(f"https://{url}/healthz", verify=trust, timeout=10)
        assert resp.status_code == 200
        assert resp.headers["strict-transport-security"] == "max-age=31536000"  # issue 16
        with pytest.raises(httpx.HTTPError):  # plain HTTP gets no answer
            httpx.get(f"http://{url}/healthz", timeout=5)
        with pytest.raises(httpx.ConnectError):  # and an unknown certificate is refused
            httpx.get(f"https://{url}/healthz", timeout=5)
    finally:
        child.stop()
