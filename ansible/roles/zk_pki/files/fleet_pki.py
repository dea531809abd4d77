#!/usr/bin/env python3
"""The fleet's certificate authority, on the Ansible controller: made once, kept up to date.

Run by the zk_pki role with the Python that runs Ansible (ansible-core depends on
`cryptography`, so nothing is installed and nothing is fetched). Reads a JSON spec on
stdin:

    {"dir": ".../secrets/hosts", "ca_name": "...", "ca_days": 3650, "cert_days": 1095,
     "renew_days": 30, "curve": "P-256",
     "hosts": {"zk1": "10.231.0.11", ...}, "extra_names": {"zk1": ["zk1.example.org"]},
     "clients": ["operator"]}

and makes, in that directory (mode 0700):

- ca.key, ca.pem: the CA (EC, self-signed, path length 0), once;
- hosts/<host>.key, hosts/<host>.pem for every host: a PKCS#8 EC key and its
  certificate, signed by the CA, for the host's name, its address and its extra names
  (subject alternative names; IP addresses as such), to serve TLS and to authenticate as
  a TLS client (ZooKeeper's quorum does both);
- clients/<name>.key, clients/<name>.pem: the same for a client identity, client only.

A certificate is issued again, with a fresh key, only when it is missing, not signed by
the current CA (the CA was replaced), expiring within renew_days, or its names differ from
the spec (an address changed); otherwise nothing is written, so a second run changes
nothing. Private keys are created 0600, every file is replaced atomically.

Prints one JSON object: {"changed": bool, "ca_created": bool, "issued": [paths],
"ca_not_after": ISO date}. Exit status 1 with a message on stderr when the directory is
inconsistent (a CA certificate without its key, say): nothing is guessed.
"""

from __future__ import annotations

import datetime
import ipaddress
import json
import os
import sys
import tempfile
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

# datetime.UTC is 3.11+; the controller may run 3.10 (ansible-core 2.17).
UTC = datetime.timezone.utc  # noqa: UP017
CURVES = {"P-256": ec.SECP256R1, "P-384": ec.SECP384R1}
# Certificates start to be valid a little in the past: the nodes' clocks may lag.
BACKDATE = datetime.timedelta(hours=1)


def fail(message: str) -> None:
    print(f"fleet_pki: {message}", file=sys.stderr)
    sys.exit(1)


def now() -> datetime.datetime:
    return datetime.datetime.now(UTC)


def not_after(cert: x509.Certificate) -> datetime.datetime:
    """The end of validity as an aware datetime (cryptography < 42 has only naive ones)."""
    value = getattr(cert, "not_valid_after_utc", None)
    return value if value is not None else cert.not_valid_after.replace(tzinfo=UTC)


def write_atomically(path: Path, data: bytes, mode: int) -> None:
    """Replace path with data, created with `mode` from the start (never readable by others
    for a moment)."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def key_bytes(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def cert_bytes(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def common_name(name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])


def make_ca(directory: Path, spec: dict) -> None:
    key = ec.generate_private_key(CURVES[spec["curve"]]())
    name = common_name(spec["ca_name"])
    start = now() - BACKDATE
    cert = (
        x509.CertificateBuilder()
        .subject_name(name).issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + datetime.timedelta(days=int(spec["ca_days"])))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False,
                                     key_encipherment=False, data_encipherment=False,
                                     key_agreement=False, key_cert_sign=True, crl_sign=True,
                                     encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                       critical=False)
        .sign(key, hashes.SHA256())
    )
    write_atomically(directory / "ca.key", key_bytes(key), 0o600)
    write_atomically(directory / "ca.pem", cert_bytes(cert), 0o644)


def general_names(names: list[str]) -> list[x509.GeneralName]:
    found: list[x509.GeneralName] = []
    for name in names:
        try:
            found.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            found.append(x509.DNSName(name))
    return found


def san_set(cert: x509.Certificate) -> set[str]:
    try:
        ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return set()
    return {str(value) for value in ext.get_values_for_type(x509.DNSName)} | {
        str(value) for value in ext.get_values_for_type(x509.IPAddress)}


def wanted_san_set(names: list[str]) -> set[str]:
    wanted = set()
    for name in names:
        try:
            wanted.add(str(ipaddress.ip_address(name)))
        except ValueError:
            wanted.add(name)
    return wanted


def signed_by(cert: x509.Certificate, ca: x509.Certificate) -> bool:
    if cert.issuer != ca.subject:
        return False
    public = ca.public_key()
    try:
        public.verify(cert.signature, cert.tbs_certificate_bytes,  # type: ignore[call-arg]
                      ec.ECDSA(cert.signature_hash_algorithm))  # type: ignore[arg-type]
    except (InvalidSignature, TypeError, ValueError):
        return False
    return True


def current(directory: Path, entry: dict, ca: x509.Certificate, renew_before: datetime.datetime,
            ) -> bool:
    """Whether entry's certificate exists, with its key, and is still what the spec wants."""
    cert_path = directory / f"{entry['path']}.pem"
    key_path = directory / f"{entry['path']}.key"
    if not cert_path.is_file() or not key_path.is_file():
        return False
    try:
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    except ValueError:
        return False
    same_key = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo,
    ) == cert.public_key().public_bytes(serialization.Encoding.DER,
                                        serialization.PublicFormat.SubjectPublicKeyInfo)
    return (same_key and signed_by(cert, ca) and not_after(cert) > renew_before
            and san_set(cert) == wanted_san_set(entry["names"]))


def issue(directory: Path, entry: dict, ca: x509.Certificate,
          ca_key: ec.EllipticCurvePrivateKey, spec: dict) -> None:
    key = ec.generate_private_key(CURVES[spec["curve"]]())
    cn = entry["names"][0] if entry["names"] else Path(entry["path"]).name
    usages = [ExtendedKeyUsageOID.CLIENT_AUTH]
    if entry.get("server"):
        usages.insert(0, ExtendedKeyUsageOID.SERVER_AUTH)
    start = now() - BACKDATE
    builder = (
        x509.CertificateBuilder()
        .subject_name(common_name(cn)).issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(min(start + datetime.timedelta(days=int(spec["cert_days"])),
                             not_after(ca)))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False,
                                     key_encipherment=False, data_encipherment=False,
                                     key_agreement=False, key_cert_sign=False, crl_sign=False,
                                     encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                       critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
            ca_key.public_key()), critical=False)
    )
    if entry["names"]:
        builder = builder.add_extension(
            x509.SubjectAlternativeName(general_names(entry["names"])), critical=False)
    cert = builder.sign(ca_key, hashes.SHA256())
    # The key first: a certificate never names a key that is not there yet.
    write_atomically(directory / f"{entry['path']}.key", key_bytes(key), 0o600)
    write_atomically(directory / f"{entry['path']}.pem", cert_bytes(cert), 0o644)


def wanted_certs(spec: dict) -> list[dict]:
    """The spec's hosts and clients as certificates: path, names (the first is the CN)."""
    certs = []
    for host, address in spec["hosts"].items():
        names = [host, str(address or host), *spec.get("extra_names", {}).get(host, [])]
        certs.append({"path": f"hosts/{host}", "names": list(dict.fromkeys(names)),
                      "server": True})
    for client in spec["clients"]:
        certs.append({"path": f"clients/{client}", "names": [], "server": False})
    return certs


def main() -> None:
    spec = json.load(sys.stdin)
    if spec.get("curve") not in CURVES:
        fail(f"curve must be one of {', '.join(CURVES)}")
    directory = Path(spec["dir"])
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    directory.chmod(0o700)
    ca_key_path, ca_path = directory / "ca.key", directory / "ca.pem"
    ca_created = False
    if not ca_key_path.exists() and not ca_path.exists():
        make_ca(directory, spec)
        ca_created = True
    elif not (ca_key_path.is_file() and ca_path.is_file()):
        fail(f"{directory} has only one of ca.key and ca.pem: restore the other from the "
             "backup, or delete both (and every certificate) to make a new CA")
    ca = x509.load_pem_x509_certificate(ca_path.read_bytes())
    ca_key = serialization.load_pem_private_key(ca_key_path.read_bytes(), password=None)
    if not isinstance(ca_key, ec.EllipticCurvePrivateKey):
        fail(f"{ca_key_path} is not an EC key")
    ca_key_path.chmod(0o600)
    renew_before = now() + datetime.timedelta(days=int(spec["renew_days"]))
    issued = []
    for entry in wanted_certs(spec):
        if not current(directory, entry, ca, renew_before):
            issue(directory, entry, ca, ca_key, spec)
            issued.append(entry["path"])
        (directory / f"{entry['path']}.key").chmod(0o600)
    print(json.dumps({"changed": ca_created or bool(issued), "ca_created": ca_created,
                      "issued": issued, "ca_not_after": not_after(ca).isoformat()}))


if __name__ == "__main__":
    main()
