"""The development PKI: server certificates for the names clients dial."""

from __future__ import annotations

import asyncio
import ipaddress

import pytest
from cryptography import x509

from fedstrata.errors import ConfigError, ProtocolError, TransportError
from fedstrata.runtime import CenterServer, GrpcLink, TokenTable, make_dev_pki


def _sans(path):
    cert = x509.load_pem_x509_certificate(path.read_bytes())
    ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return ext.get_values_for_type(x509.DNSName), ext.get_values_for_type(x509.IPAddress)


def test_dev_pki_server_certificate_names_every_host(tmp_path):
    """Issue 11 defect 16: ``hosts`` adds DNS names and IP addresses to the server's SANs."""
    pki = make_dev_pki(tmp_path, [0], hosts=["center-host", "10.1.2.3", "fd00::5"])
    dns, ips = _sans(pki.server.cert)
    assert dns == ["center-host", "localhost"]
    assert ips == [ipaddress.ip_address(a) for a in ("10.1.2.3", "fd00::5", "127.0.0.1", "::1")]
    with pytest.raises(ConfigError, match="neither an IP address nor a DNS name"):
        make_dev_pki(tmp_path / "bad", [0], hosts=["not a host"])


def test_a_certificate_for_a_custom_name_verifies_for_that_name_only(tmp_path, small_deployment):
    """Issue 11 defect 16: a client dialling the center as ``center-host`` verifies the
    certificate; a name the certificate does not carry fails the handshake."""
    pki = make_dev_pki(tmp_path, [0], hosts=["center-host"])
    tokens = {0: "t0"}

    async def dial(name):
        center = small_deployment.center()
        async with CenterServer(center, TokenTable(tokens), tls=pki.server) as server:
            link = GrpcLink(
                server.target, 0, "t0", tls=pki.client(0, mutual=False), server_name=name
            )
            link.run_id = center.run_id  # as if its session had joined the run
            async with link:
                return await link.download(0)

    with pytest.raises(ProtocolError, match="no model of round 0"):  # TLS is up
        asyncio.run(dial("center-host"))
    with pytest.raises(TransportError, match="UNAVAILABLE"):
        asyncio.run(dial("elsewhere-host"))
