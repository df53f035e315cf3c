"""The locally generated certificate Traefik serves when no Let's Encrypt domain is set.

A small local certificate authority (10 years, kept; its key among the hub's secrets) signs the server certificate (for the
hub's host name, `localhost`, the wildcard over user hosts when they have subdomains, and the
loopback addresses; one year, renewed by the init step
when fewer than 30 days remain). Trusting `local-ca.crt` once, in a browser or with
`curl --cacert`, makes every renewed certificate verify, as with mkcert.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

RENEW_BEFORE = dt.timedelta(days=30)
SERVER_VALIDITY = dt.timedelta(days=365)
CA_VALIDITY = dt.timedelta(days=3650)


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def needs_certificate(cert_path: Path, now: dt.datetime | None = None, names: tuple[str, ...] = ()) -> bool:
    """Whether to (re)write the certificate: missing, due for renewal, or not naming every one
    of `names` (e.g. after DOMAIN or GPUHUB_USER_SUBDOMAINS changed)."""
    try:
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    except (FileNotFoundError, ValueError):
        return True
    if names:
        try:
            san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        except x509.ExtensionNotFound:
            return True
        if not set(names) <= set(san.get_values_for_type(x509.DNSName)):
            return True
    return cert.not_valid_after_utc - (now or _now()) < RENEW_BEFORE


def _write(path: Path, data: bytes, mode: int) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name),
                      x509.NameAttribute(NameOID.ORGANIZATION_NAME, "gpuhub local certificate")])


def ensure_local_ca(directory: Path, key_path: Path) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """Load the local CA (certificate in `directory`, key at `key_path`), creating it on first use."""
    cert_path = directory / "local-ca.crt"
    if cert_path.exists() and key_path.exists() and not needs_certificate(cert_path):
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
        assert isinstance(key, ec.EllipticCurvePrivateKey)
        return x509.load_pem_x509_certificate(cert_path.read_bytes()), key
    key = ec.generate_private_key(ec.SECP256R1())
    name = _name("gpuhub local CA")
    now = _now()
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + CA_VALIDITY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False, key_encipherment=False,
                                     data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                     crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    directory.mkdir(parents=True, exist_ok=True)
    key_path.parent.mkdir(parents=True, exist_ok=True)
    _write(key_path, _key_pem(key), 0o600)
    _write(cert_path, cert.public_bytes(serialization.Encoding.PEM), 0o644)
    return cert, key


def write_localhost_certificate(directory: Path, ca_key_path: Path,
                                hostnames: tuple[str, ...] = ("localhost",)) -> None:
    """Write local.crt (server certificate, then the CA) and local.key into `directory`.

    The CA's key lives apart (`ca_key_path`, among the hub's secrets): the proxy, which reads
    `directory`, can serve the certificate but cannot mint others.
    """
    ca_cert, ca_key = ensure_local_ca(directory, ca_key_path)
    key = ec.generate_private_key(ec.SECP256R1())
    now = _now()
    alt_names: list[x509.GeneralName] = [x509.DNSName(h) for h in hostnames]
    alt_names += [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.IPAddress(ipaddress.ip_address("::1"))]
    cert = (
        x509.CertificateBuilder().subject_name(_name(hostnames[0])).issuer_name(ca_cert.subject)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + SERVER_VALIDITY)
        .add_extension(x509.SubjectAlternativeName(alt_names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    _write(directory / "local.key", _key_pem(key), 0o600)
    chain = cert.public_bytes(serialization.Encoding.PEM) + ca_cert.public_bytes(serialization.Encoding.PEM)
    _write(directory / "local.crt", chain, 0o644)
