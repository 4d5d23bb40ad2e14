"""TLS / mutual TLS credentials, per-client bearer tokens, and a development PKI.

* :class:`TlsFiles` names PEM files; :func:`server_credentials` and
  :func:`channel_credentials` turn them into gRPC credentials (mutual TLS when the
  server requires client certificates and the client presents one).
* :class:`TokenTable` maps bearer tokens to client ids. Tokens are compared by their
  SHA-256 digest with :func:`hmac.compare_digest`; the table never holds a token in
  clear. Every call is authenticated (see ``center.py``); under mutual TLS the
  certificate's common name must also be ``client-<id>`` of the token's client, so a
  stolen token is useless without the matching key.
* :func:`make_dev_pki` writes a development CA plus server and client certificates
  with ``cryptography`` (the server's for every host name clients dial): for tests
  and trials only, never for production keys.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import ipaddress
import re
import secrets
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from fedstrata.errors import ConfigError

__all__ = [
    "DevPki",
    "TlsFiles",
    "TokenTable",
    "channel_credentials",
    "client_common_name",
    "make_dev_pki",
    "new_token",
    "server_credentials",
    "server_names",
]


def client_common_name(client_id: int) -> str:
    """The certificate common name a client must present under mutual TLS."""
    return f"client-{client_id}"


def new_token() -> str:
    """A fresh random bearer token (256 bits, URL-safe)."""
    return secrets.token_urlsafe(32)


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8")).digest()


class TokenTable:
    """Bearer token -> client id, holding only the tokens' digests.

    Raises:
        ConfigError: two clients share a token, or a token is empty.
    """

    def __init__(self, tokens: Mapping[int, str]) -> None:
        self._by_digest: dict[bytes, int] = {}
        for client_id, token in tokens.items():
            if not token:
                raise ConfigError(f"TokenTable: client {client_id} has an empty token")
            digest = _digest(token)
            if digest in self._by_digest:
                raise ConfigError(f"TokenTable: client {client_id} reuses another's token")
            self._by_digest[digest] = int(client_id)

    def client_for(self, token: str) -> int | None:
        """The client the token belongs to, or None for an unknown token."""
        digest = _digest(token)
        found = None
        for known, client_id in self._by_digest.items():  # constant time per entry
            if hmac.compare_digest(known, digest):
                found = client_id
        return found

    def __len__(self) -> int:
        return len(self._by_digest)


@dataclass(frozen=True)
class TlsFiles:
    """PEM files of one endpoint.

    Attributes:
        ca_cert: the CA that signs the peer's certificate.
        cert: this endpoint's certificate chain (``None``: a client without mTLS).
        key: this endpoint's private key (with ``cert``).
    """

    ca_cert: Path
    cert: Path | None = None
    key: Path | None = None

    def __post_init__(self) -> None:
        if (self.cert is None) != (self.key is None):
            raise ConfigError("TlsFiles: set both cert and key, or neither")
        for name in ("ca_cert", "cert", "key"):
            path = getattr(self, name)
            if path is not None and not Path(path).is_file():
                raise ConfigError(f"TlsFiles.{name}: {path} is not a readable file")

    def read(self) -> tuple[bytes, bytes | None, bytes | None]:
        """(CA, certificate chain, key) as PEM bytes."""
        cert = None if self.cert is None else Path(self.cert).read_bytes()
        key = None if self.key is None else Path(self.key).read_bytes()
        return Path(self.ca_cert).read_bytes(), cert, key


def server_credentials(tls: TlsFiles, *, require_client_cert: bool) -> grpc.ServerCredentials:
    """gRPC server credentials; ``require_client_cert`` turns on mutual TLS.

    Raises:
        ConfigError: the server has no certificate and key.
    """
    ca, cert, key = tls.read()
    if cert is None or key is None:
        raise ConfigError("server TLS needs TlsFiles.cert and TlsFiles.key")
    return grpc.ssl_server_credentials(
        [(key, cert)], root_certificates=ca, require_client_auth=require_client_cert
    )


def channel_credentials(tls: TlsFiles) -> grpc.ChannelCredentials:
    """gRPC channel credentials; presents a client certificate when ``tls`` has one."""
    ca, cert, key = tls.read()
    return grpc.ssl_channel_credentials(
        root_certificates=ca, private_key=key, certificate_chain=cert
    )


@dataclass(frozen=True)
class DevPki:
    """Where :func:`make_dev_pki` wrote its files."""

    ca_cert: Path
    server: TlsFiles
    clients: dict[int, TlsFiles]

    def client(self, client_id: int, *, mutual: bool = True) -> TlsFiles:
        """The client's files; ``mutual=False`` gives CA-only (server-auth TLS)."""
        return self.clients[client_id] if mutual else TlsFiles(self.ca_cert)


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _write_pair(
    folder: Path, stem: str, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey
) -> tuple[Path, Path]:
    cert_path, key_path = folder / f"{stem}.pem", folder / f"{stem}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    key_path.chmod(0o600)
    return cert_path, key_path


def _sign(
    subject: str,
    key: ec.EllipticCurvePrivateKey,
    issuer: tuple[str, ec.EllipticCurvePrivateKey] | None,
    sans: list[x509.GeneralName],
    days: int,
) -> x509.Certificate:
    now = dt.datetime.now(dt.UTC)
    issuer_name, issuer_key = issuer if issuer is not None else (subject, key)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(_name(issuer_name))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=issuer is None, path_length=None), critical=True)
    )
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


_DNS_LABEL = re.compile(r"(\*|[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)")


def server_names(hosts: Iterable[str]) -> list[x509.GeneralName]:
    """Subject alternative names for ``hosts``: IP addresses as such, others as DNS names.

    Raises:
        ConfigError: a name that is neither an IP address nor a DNS name.
    """
    sans: list[x509.GeneralName] = []
    for host in hosts:
        try:
            sans.append(x509.IPAddress(ipaddress.ip_address(host)))
            continue
        except ValueError:
            pass
        labels = host.rstrip(".").split(".")
        if not host or not all(_DNS_LABEL.fullmatch(label) for label in labels):
            raise ConfigError(f"server host {host!r} is neither an IP address nor a DNS name")
        sans.append(x509.DNSName(host))
    return list(dict.fromkeys(sans))  # de-duplicated, in order


def make_dev_pki(
    folder: Path,
    client_ids: Iterable[int],
    *,
    hostname: str = "localhost",
    hosts: Sequence[str] = (),
    days: int = 30,
) -> DevPki:
    """Write a development CA, a server certificate and one certificate per client.

    The server certificate is valid for ``hostname``, 127.0.0.1 and ::1, and for every
    name in ``hosts`` (DNS names or IP addresses: the names clients dial, e.g.
    ``center-host`` or ``10.0.0.5``); its common name is the first of ``hosts`` (else
    ``hostname``). Client certificates carry the common name :func:`client_common_name`.

    Raises:
        ConfigError: ``days`` < 1, or a host that is not a DNS name or an IP address.
    """
    if days < 1:
        raise ConfigError(f"make_dev_pki: days must be >= 1, got {days}")
    sans = server_names([*hosts, hostname, "127.0.0.1", "::1"])
    folder.mkdir(parents=True, exist_ok=True)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_path, _ = _write_pair(
        folder, "ca", _sign("fedstrata-dev-ca", ca_key, None, [], days), ca_key
    )
    issuer = ("fedstrata-dev-ca", ca_key)
    server_key = ec.generate_private_key(ec.SECP256R1())
    cert = _sign(hosts[0] if hosts else hostname, server_key, issuer, sans, days)
    server = TlsFiles(ca_path, *_write_pair(folder, "server", cert, server_key))
    clients = {}
    for cid in client_ids:
        key = ec.generate_private_key(ec.SECP256R1())
        cert = _sign(client_common_name(cid), key, issuer, [], days)
        clients[cid] = TlsFiles(ca_path, *_write_pair(folder, f"client-{cid}", cert, key))
    return DevPki(ca_path, server, clients)
