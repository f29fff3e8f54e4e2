"""mqtts://: the link verifies the broker against the CA from the config, and refuses others."""

from __future__ import annotations

import asyncio
import datetime as dt
import ipaddress
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from hub_agent.config import HubConfig
from hub_agent.telemetry.service import Telemetry
from lab.broker import Broker
from tests.conftest import require_mosquitto
from tests.linux.test_telemetry_lab import load, until

pytestmark = pytest.mark.root


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def make_ca(folder: Path, cn: str) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(cn))
        .issuer_name(_name(cn))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    (folder / f"{cn}.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return key, cert


class TlsBroker(Broker):
    """The lab broker with its listener on TLS, server cert for 127.0.0.1 signed by a CA."""

    def _write_config(self) -> Path:
        ca_key, ca = make_ca(self.workdir, "relais-test-ca")
        key = ec.generate_private_key(ec.SECP256R1())
        now = dt.datetime.now(dt.UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(_name("broker"))
            .issuer_name(ca.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(
                x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(self.host))]),
                critical=False,
            )
            .sign(ca_key, hashes.SHA256())
        )
        (self.workdir / "server.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        (self.workdir / "server.key").write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        conf = super()._write_config()
        lines = conf.read_text().splitlines()
        at = next(i for i, ln in enumerate(lines) if ln.startswith("listener"))
        lines[at + 1 : at + 1] = [
            f"certfile {self.workdir / 'server.pem'}",
            f"keyfile {self.workdir / 'server.key'}",
        ]
        conf.write_text("\n".join(lines) + "\n")
        self._give_to_broker_user()
        return conf


def tls_config(tmp_path: Path, broker: Broker, ca: Path) -> HubConfig:
    cfg = load(tmp_path, broker)
    mqtt = cfg.mqtt.model_copy(
        update={"url": f"mqtts://{broker.host}:{broker.port}", "ca_file": ca}
    )
    return cfg.model_copy(update={"mqtt": mqtt})


async def _try(cfg: HubConfig) -> Telemetry:
    tel = Telemetry(cfg, probe=None, interval_s=5)
    await tel.start()
    await until(tel.link.connected.is_set, 3)
    if tel.link.connected.is_set():
        await asyncio.wait_for(tel.link.publish("relais/hubs/hub-a/health", {"seq": 0}), 5)
    await tel.stop()
    return tel


def test_mqtts_verifies_the_broker_with_the_configured_ca(tmp_path: Path) -> None:
    require_mosquitto()
    from tests.linux.test_telemetry_lab import secure_broker

    with TlsBroker() as broker:
        secure_broker(broker)
        good = asyncio.run(
            _try(tls_config(tmp_path, broker, broker.workdir / "relais-test-ca.pem"))
        )
        assert good.link.status.connects == 1 and good.link.settings.tls
        _, _ = make_ca(tmp_path, "someone-else")
        bad = asyncio.run(_try(tls_config(tmp_path, broker, tmp_path / "someone-else.pem")))
        assert bad.link.status.connects == 0
        assert "CERTIFICATE_VERIFY_FAILED" in (bad.link.status.last_error or ""), (
            bad.link.status.last_error
        )
