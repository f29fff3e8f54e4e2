"""`captive-portal` for real: uvicorn on HTTP and, with a certificate, HTTPS in the same
process (RFC 8908 wants the API over TLS); a bad config is refused with the field's path."""

from __future__ import annotations

import datetime as dt
import ipaddress
import signal
import socket
import ssl
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.unit.real_agent import AgentThread, FakeClock, RealAgent, config_dict, portal_config

BIN = Path(sys.executable).parent / "captive-portal"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _self_signed(tmp: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "hub.relais.test")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp / "portal.crt", tmp / "portal.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


def _wait_http(url: str, proc: subprocess.Popen[bytes], **kw: object) -> None:
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.stdout.read().decode() if proc.stdout else ""
        try:
            httpx.get(url, timeout=1, **kw)  # type: ignore[arg-type]
            return
        except httpx.TransportError:
            time.sleep(0.1)
    raise AssertionError(f"{url} never answered")


def test_serves_http_and_https_and_stops_on_sigterm(tmp_path: Path) -> None:
    sock = tmp_path / "agent.sock"
    cert, key = _self_signed(tmp_path)
    http_port, https_port = _free_port(), _free_port()
    data = config_dict(sock, tls_cert=str(cert), tls_key=str(key), https_port=https_port)
    cfg = tmp_path / "hub.yaml"
    cfg.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    agent = RealAgent(portal_config(sock), {"127.0.0.1": "02:00:00:00:0b:01"}, FakeClock())
    tls = ssl.create_default_context(cafile=str(cert))
    with agent, AgentThread(sock, agent):
        proc = subprocess.Popen(
            [str(BIN), "--config", str(cfg), "--host", "127.0.0.1", "--port", str(http_port)],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        try:
            http, https = f"http://127.0.0.1:{http_port}", f"https://127.0.0.1:{https_port}"
            _wait_http(http + "/api/captive", proc)
            _wait_http(https + "/api/captive", proc, verify=tls)
            r = httpx.get(http + "/generate_204")
            assert r.status_code == 302
            assert r.headers["location"] == f"http://10.42.0.1:{http_port}/"
            r = httpx.get(https + "/api/captive", verify=tls)
            assert r.headers["content-type"] == "application/captive+json"
            assert r.json()["user-portal-url"] == f"https://10.42.0.1:{https_port}/"
            assert "Mairie de Démo" in httpx.get(https + "/", verify=tls).text
            assert "server" not in r.headers  # no version banner
        finally:
            proc.send_signal(signal.SIGTERM)
            out, _ = proc.communicate(timeout=15)
    assert proc.returncode == 0, out.decode()
    log = out.decode()
    assert f"http://127.0.0.1:{http_port}/" in log and f"https://127.0.0.1:{https_port}/" in log


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"admin_password_hash": "plaintext"}, "portal.admin_password_hash"),
        ({"login_attempts": 0}, "portal.login_attempts"),
        ({"tls_cert": "/nonexistent.crt", "tls_key": "/nonexistent.key"}, "portal.tls_cert"),
    ],
)
def test_bad_settings_are_refused_with_the_field(
    tmp_path: Path, change: dict[str, object], field: str
) -> None:
    cfg = tmp_path / "hub.yaml"
    cfg.write_text(yaml.safe_dump(config_dict(tmp_path / "s", **change)), encoding="utf-8")
    r = subprocess.run([str(BIN), "--config", str(cfg)], capture_output=True, text=True)
    assert r.returncode == 2 and field in r.stderr, r.stderr
