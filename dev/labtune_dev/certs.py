"""The PKI of a local control plane: a CA, the apiserver's serving cert, client certs, SA keys.

TLS keys are ECDSA P-256 (instant to generate); the service-account signing key is RSA, the
algorithm every Kubernetes token consumer supports.
"""

from __future__ import annotations

import datetime
import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

# The first address of --service-cluster-ip-range: the `kubernetes` Service's ClusterIP.
SERVICE_IP = "10.0.0.1"
_VALIDITY = datetime.timedelta(days=365)
_CLOCK_SKEW = datetime.timedelta(hours=1)
_SERVING_DNS_NAMES = (
    "localhost",
    "kubernetes",
    "kubernetes.default",
    "kubernetes.default.svc",
    "kubernetes.default.svc.cluster.local",
)

_PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey


@dataclass(frozen=True)
class CertKey:
    """PEM files of a certificate and its private key."""

    cert: Path
    key: Path


@dataclass(frozen=True)
class ControlPlaneCerts:
    ca: CertKey
    apiserver: CertKey
    admin: CertKey
    controller_manager: CertKey
    scheduler: CertKey
    kubelet_client: CertKey
    """The apiserver's client cert for kubelets (logs, exec, port-forward)."""
    service_account_key: Path
    service_account_public_key: Path


def generate(directory: Path, server_ips: Sequence[str] = ()) -> ControlPlaneCerts:
    """Writes a fresh PKI into `directory` (created if needed, files readable by the owner only);
    the apiserver's cert is valid for loopback, the `kubernetes` Service and `server_ips`."""
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = _name("labtune-devcluster-ca")
    ca_cert = (
        _builder(ca_name, ca_name, ca_key)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(_key_usage(cert_sign=True), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    ca = _write(directory, "ca", ca_cert, ca_key)
    sa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    sa_pub = directory / "service-account.pub"
    sa_pub.write_bytes(
        sa_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return ControlPlaneCerts(
        ca=ca,
        apiserver=_serving_cert(
            directory,
            "apiserver",
            ca_cert,
            ca_key,
            _SERVING_DNS_NAMES,
            ("127.0.0.1", SERVICE_IP, *server_ips),
        ),
        admin=_client_cert(directory, "admin", ca_cert, ca_key, "admin", ["system:masters"]),
        controller_manager=_client_cert(
            directory, "controller-manager", ca_cert, ca_key, "system:kube-controller-manager", []
        ),
        scheduler=_client_cert(directory, "scheduler", ca_cert, ca_key, "system:kube-scheduler", []),
        kubelet_client=_client_cert(
            directory,
            "apiserver-kubelet-client",
            ca_cert,
            ca_key,
            "kube-apiserver-kubelet-client",
            ["system:masters"],
        ),
        service_account_key=_write_key(directory / "service-account.key", sa_key),
        service_account_public_key=sa_pub,
    )


def issue_client_cert(directory: Path, stem: str, ca: CertKey, user: str, groups: Sequence[str]) -> CertKey:
    """A client cert signed by the CA in `ca` (e.g. a kubelet's: system:node:NAME in system:nodes)."""
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    ca_cert, ca_key = _load(ca)
    return _client_cert(directory, stem, ca_cert, ca_key, user, list(groups))


def issue_serving_cert(
    directory: Path, stem: str, ca: CertKey, dns_names: Sequence[str], ips: Sequence[str]
) -> CertKey:
    """A serving cert signed by the CA in `ca` (e.g. a kubelet's, for the apiserver's log and exec calls)."""
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    ca_cert, ca_key = _load(ca)
    return _serving_cert(directory, stem, ca_cert, ca_key, dns_names, ips)


def _load(ca: CertKey) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = serialization.load_pem_private_key(ca.key.read_bytes(), password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise TypeError(f"{ca.key} is not the ECDSA key generate() writes")
    return x509.load_pem_x509_certificate(ca.cert.read_bytes()), key


def _serving_cert(
    directory: Path,
    stem: str,
    ca_cert: x509.Certificate,
    ca_key: ec.EllipticCurvePrivateKey,
    dns_names: Sequence[str],
    ips: Sequence[str],
) -> CertKey:
    key = ec.generate_private_key(ec.SECP256R1())
    names: list[x509.GeneralName] = [x509.DNSName(name) for name in dns_names]
    names += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in dict.fromkeys(ips)]
    cert = (
        _builder(_name(stem), ca_cert.subject, key)
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(_key_usage(cert_sign=False), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    return _write(directory, stem, cert, key)


def _client_cert(
    directory: Path,
    stem: str,
    ca_cert: x509.Certificate,
    ca_key: ec.EllipticCurvePrivateKey,
    user: str,
    groups: list[str],
) -> CertKey:
    """A client cert; Kubernetes reads the user from CN and the groups from O."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name(
        [x509.NameAttribute(NameOID.ORGANIZATION_NAME, group) for group in groups]
        + [x509.NameAttribute(NameOID.COMMON_NAME, user)]
    )
    cert = (
        _builder(subject, ca_cert.subject, key)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .add_extension(_key_usage(cert_sign=False), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    return _write(directory, stem, cert, key)


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _builder(subject: x509.Name, issuer: x509.Name, key: _PrivateKey) -> x509.CertificateBuilder:
    now = datetime.datetime.now(datetime.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _CLOCK_SKEW)
        .not_valid_after(now + _VALIDITY)
    )


def _key_usage(*, cert_sign: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=cert_sign,
        crl_sign=cert_sign,
        encipher_only=False,
        decipher_only=False,
    )


def _write(directory: Path, stem: str, cert: x509.Certificate, key: _PrivateKey) -> CertKey:
    cert_path = directory / f"{stem}.crt"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return CertKey(cert=cert_path, key=_write_key(directory / f"{stem}.key", key))


def _write_key(path: Path, key: _PrivateKey) -> Path:
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    path.touch(mode=0o600)
    path.write_bytes(pem)
    return path
