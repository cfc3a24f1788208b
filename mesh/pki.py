"""The cluster's certificate authority and its node certificates (cryptography's x509).

- The CA is made by ``corral agent --bootstrap``: an ECDSA P-256 key and a self-signed certificate
  (10 years). Its certificate is public (in the replicated state and every data dir); its key is kept in
  the replicated state sealed with a key derived from the cluster secret, so whichever manager leads
  can sign. (Every member holds that secret — it seals Raft and gossip — so a member is trusted with
  the CA as it is with the log; the certificates name nodes to clients, they are not a boundary between
  members.)
- A node makes its own key (which never leaves its data dir) and a CSR; the leader signs it for 90 days
  with the node's name as the subject and in the SANs (with its addresses) and its role in the
  subject's OU and an extended key usage: ``manager`` or ``worker``. A certificate is renewed when a
  third of its life is left.
- A joining node knows the CA only by the SHA-256 fingerprint its join token carries: it checks the CA
  certificate it is sent against that, then the server's certificate against the CA (as Swarm does).
- The CA is rotated without downtime (``corral ca rotate``): a new CA (its own name, its generation in
  the common name) and a **cross-signed** copy of it (same name and key, issued by the old CA). While
  the old one is retiring, every node trusts both, and serves its new certificate with the cross-signed
  copy after it, so a peer or a client that still trusts only the old CA verifies it too
  (leaf → new CA, cross-signed → old CA). Once every host serves a certificate of the new CA the old
  one is retired and trusted no more.

Nothing here reads a clock: ``now`` is an argument.
"""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import ipaddress
import os
import re

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CA_DAYS = 3650
NODE_DAYS = 90
RENEW_WHEN_LEFT = 1 / 3
"""A certificate is renewed when less than this share of its life is left."""
ROLES = ("manager", "worker")
MAX_CSR = 4096


class PkiError(ValueError):
    """A certificate, CSR or fingerprint that is not what it must be; the message says what."""


def _utc(now: float) -> datetime.datetime:
    return datetime.datetime.fromtimestamp(now, tz=datetime.UTC)


def new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def load_key(pem: bytes) -> ec.EllipticCurvePrivateKey:
    key = serialization.load_pem_private_key(pem, password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise PkiError("not an EC private key")
    return key


def _ca_name(cluster: str, generation: int) -> x509.Name:
    common = f"Corral cluster CA {cluster}" + (f" #{generation}" if generation > 1 else "")
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Corral"),
                      x509.NameAttribute(NameOID.COMMON_NAME, common)])


def self_signed_ca(name: x509.Name, days: int, path_length: int, now: float) -> tuple[bytes, bytes]:
    """(certificate PEM, key PEM) of a new self-signed CA of ``name`` (``path_length``: how many CAs may
    stand between it and a leaf)."""
    key = new_key()
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(_utc(now - 300)).not_valid_after(_utc(now + days * 86400))
            .add_extension(x509.BasicConstraints(ca=True, path_length=path_length), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                         content_commitment=False, key_encipherment=False, data_encipherment=False,
                                         key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256()))
    return cert.public_bytes(serialization.Encoding.PEM), key_pem(key)


def make_ca(cluster: str, now: float, generation: int = 1) -> tuple[bytes, bytes]:
    """(certificate PEM, key PEM) of a new cluster CA; a rotated one has its generation in its name
    (two CAs trusted at once must differ by name, or a chain could not be told from the other). It
    allows one CA below it: the cross-signed successor of a rotation."""
    return self_signed_ca(_ca_name(cluster, generation), CA_DAYS, 1, now)


def next_ca(old_ca_pem: bytes, generation: int, now: float) -> tuple[bytes, bytes]:
    """(certificate PEM, key PEM) of the CA that replaces ``old_ca_pem``: the same cluster, the next generation."""
    old = x509.load_pem_x509_certificate(old_ca_pem)
    names = old.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    common = str(names[0].value) if names else "Corral cluster CA"
    cluster = re.sub(r" #\d+$", "", common).removeprefix("Corral cluster CA").strip() or "cluster"
    return make_ca(cluster, now, generation)


def cross_sign(new_ca_pem: bytes, old_ca_pem: bytes, old_key_pem: bytes, now: float) -> bytes:
    """The new CA's certificate again, issued by the old CA: what lets a peer or client that trusts only
    the old CA verify a certificate of the new one during a rotation. It ends when the old CA does."""
    new, old = x509.load_pem_x509_certificate(new_ca_pem), x509.load_pem_x509_certificate(old_ca_pem)
    old_key = load_key(old_key_pem)
    builder = (x509.CertificateBuilder().subject_name(new.subject).issuer_name(old.subject)
               .public_key(new.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(_utc(now - 300))
               .not_valid_after(min(new.not_valid_after_utc, old.not_valid_after_utc)))
    for ext in new.extensions:
        builder = builder.add_extension(ext.value, ext.critical)
    builder = builder.add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(old_key.public_key()),
                                    critical=False)
    return builder.sign(old_key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)


def vouched(ca_pem: bytes, cross_pem: bytes, pinned_pem: bytes, now: float) -> bool:
    """Is ``cross_pem`` the CA ``ca_pem`` (same name, same key) issued by ``pinned_pem``? — how a node that
    trusts only the old CA of a rotation comes to trust the new one."""
    try:
        ca, cross = x509.load_pem_x509_certificate(ca_pem), x509.load_pem_x509_certificate(cross_pem)
    except ValueError:
        return False
    return (ca.subject == cross.subject and ca.public_key() == cross.public_key()
            and issued_by(cross_pem, pinned_pem, now))


def split_pem(bundle: bytes) -> list[bytes]:
    """The certificates of a PEM bundle, each as its own PEM (PkiError if there is none or one is bad)."""
    try:
        certs = x509.load_pem_x509_certificates(bundle)
    except ValueError as exc:
        raise PkiError(f"not a PEM certificate: {exc}") from None
    return [c.public_bytes(serialization.Encoding.PEM) for c in certs]


def fingerprint(cert_pem: bytes) -> str:
    """SHA-256 of the certificate's DER, hex: what a join token carries and ``corral login`` shows (of
    the first certificate, in a bundle)."""
    try:
        cert = x509.load_pem_x509_certificate(cert_pem)
    except ValueError as exc:
        raise PkiError(f"not a PEM certificate: {exc}") from None
    return hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest()


def make_csr(name: str, key: ec.EllipticCurvePrivateKey) -> bytes:
    csr = (x509.CertificateSigningRequestBuilder()
           .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])).sign(key, hashes.SHA256()))
    return csr.public_bytes(serialization.Encoding.PEM)


@dataclasses.dataclass(frozen=True)
class Issued:
    cert_pem: bytes
    not_after: float


def sign(ca_cert_pem: bytes, ca_key_pem: bytes, csr_pem: bytes, name: str, role: str, addresses: list[str],
         now: float, days: int = NODE_DAYS) -> Issued:
    """Sign a node's CSR: PkiError unless the CSR is well formed, self-consistent and for ``name``."""
    if role not in ROLES:
        raise PkiError(f"a node's role is one of {', '.join(ROLES)}")
    if len(csr_pem) > MAX_CSR:
        raise PkiError(f"a CSR is at most {MAX_CSR} bytes")
    try:
        csr = x509.load_pem_x509_csr(csr_pem)
    except ValueError as exc:
        raise PkiError(f"not a PEM CSR: {exc}") from None
    if not csr.is_signature_valid:
        raise PkiError("the CSR's signature does not match its key")
    names = csr.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    if len(names) != 1 or names[0].value != name:
        raise PkiError(f"the CSR is for {names[0].value if names else 'no name'!r}, not for {name!r}")
    if not isinstance(csr.public_key(), ec.EllipticCurvePublicKey):
        raise PkiError("a node key is ECDSA P-256")
    ca_cert = x509.load_pem_x509_certificate(ca_cert_pem)
    ca_key = load_key(ca_key_pem)
    sans: list[x509.GeneralName] = [x509.DNSName(name)]
    for address in addresses:
        try:
            sans.append(x509.IPAddress(ipaddress.ip_address(address)))
        except ValueError:
            raise PkiError(f"{address!r} is not an IP address") from None
    not_after = now + days * 86400
    usages = [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name),
                                     x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, role)]))
            .issuer_name(ca_cert.subject).public_key(csr.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(_utc(now - 300)).not_valid_after(_utc(not_after))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.SubjectAlternativeName(sans), critical=False)
            .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256()))
    return Issued(cert.public_bytes(serialization.Encoding.PEM), not_after)


def role_of(cert_pem: bytes) -> str | None:
    cert = x509.load_pem_x509_certificate(cert_pem)
    units = cert.subject.get_attributes_for_oid(NameOID.ORGANIZATIONAL_UNIT_NAME)
    role = str(units[0].value) if units else None
    return role if role in ROLES else None


def not_after(cert_pem: bytes) -> float:
    return x509.load_pem_x509_certificate(cert_pem).not_valid_after_utc.timestamp()


def not_before(cert_pem: bytes) -> float:
    return x509.load_pem_x509_certificate(cert_pem).not_valid_before_utc.timestamp()


def due_for_renewal(cert_pem: bytes, now: float) -> bool:
    start, end = not_before(cert_pem), not_after(cert_pem)
    return end - now < (end - start) * RENEW_WHEN_LEFT


def issued_by(leaf_der_or_pem: bytes, ca_cert_pem: bytes, now: float) -> bool:
    """Is this certificate signed by the CA and valid now? (How a joining node checks the node it asks;
    given a bundle, by any CA of it.)"""
    if ca_cert_pem.count(b"-----BEGIN CERTIFICATE-----") > 1:
        return any(issued_by(leaf_der_or_pem, one, now) for one in split_pem(ca_cert_pem))
    try:
        leaf = (x509.load_pem_x509_certificate(leaf_der_or_pem) if leaf_der_or_pem.startswith(b"-----")
                else x509.load_der_x509_certificate(leaf_der_or_pem))
        ca = x509.load_pem_x509_certificate(ca_cert_pem)
        ca_key = ca.public_key()
        if not isinstance(ca_key, ec.EllipticCurvePublicKey) or leaf.issuer != ca.subject:
            return False
        assert leaf.signature_hash_algorithm is not None
        ca_key.verify(leaf.signature, leaf.tbs_certificate_bytes, ec.ECDSA(leaf.signature_hash_algorithm))
    except (ValueError, InvalidSignature, AssertionError):
        return False
    return leaf.not_valid_before_utc.timestamp() <= now <= leaf.not_valid_after_utc.timestamp()


# ---------------------------------------------------------------------- the CA key in the replicated state


def _ca_seal_key(cluster_secret: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=b"corral ca key v1").derive(cluster_secret)


def seal_ca_key(cluster_secret: bytes, key_pem_bytes: bytes) -> bytes:
    nonce = os.urandom(12)
    return nonce + AESGCM(_ca_seal_key(cluster_secret)).encrypt(nonce, key_pem_bytes, b"corral ca")


def open_ca_key(cluster_secret: bytes, sealed: bytes) -> bytes:
    try:
        return AESGCM(_ca_seal_key(cluster_secret)).decrypt(sealed[:12], sealed[12:], b"corral ca")
    except Exception as exc:  # InvalidTag, or too short
        raise PkiError("the CA key cannot be opened with this cluster's secret") from exc


__all__ = ["CA_DAYS", "NODE_DAYS", "ROLES", "Issued", "PkiError", "due_for_renewal", "fingerprint", "issued_by",
           "key_pem", "load_key", "make_ca", "make_csr", "new_key", "not_after", "open_ca_key", "role_of",
           "seal_ca_key", "sign"]
