#!/usr/bin/env python3
"""The fleet's certificate authorities, on the Ansible controller: made once, kept up to date.

Run by the zk_pki role with the Python that runs Ansible (ansible-core depends on
`cryptography`, so nothing is installed and nothing is fetched). Reads a JSON spec on
stdin:

    {"dir": "~/.local/share/zk-sensor/pki/hosts", "ca_name": "...", "quorum_ca_name": "...",
     "ca_days": 3650, "cert_days": 90, "renew_days": 30, "curve": "P-256",
     "hosts": {"zk1": "10.231.0.11", ...}, "quorum_hosts": ["zk1", ...],
     "extra_names": {"zk1": ["zk1.example.org"]}, "clients": ["operator"],
     "passphrase_file": "~/.config/zk-sensor/pki/hosts.passphrase",
     "crl_url": "file:///etc/zookeeper/tls/ca.crl", "revoked": ["sensor9"]}

and makes, in that directory (mode 0700):

- ca.key, ca.pem: the fleet's CA (EC, self-signed, path length 0), once; it signs every
  host's and client's certificate, which the ZooKeeper servers' client port, the
  collectors and PostgreSQL trust;
- quorum-ca.key, quorum-ca.pem: a second CA, once, that signs only the ZooKeeper servers'
  quorum certificates, the only ones the servers trust from each other: a sensor's key
  (signed by the fleet's CA) never makes a quorum peer;
- hosts/<host>.key, hosts/<host>.pem for every host: a PKCS#8 EC key and its
  certificate, signed by the fleet's CA, for the host's name, its address and its extra
  names (subject alternative names; IP addresses as such), to serve TLS and to
  authenticate as a TLS client;
- quorum/<host>.key, quorum/<host>.pem for every host of quorum_hosts: the same, signed
  by the quorum CA;
- clients/<name>.key, clients/<name>.pem: a client identity of the fleet's CA, client only;
- super.password, super.digest: the break-glass ZooKeeper identity (fleet_secrets.py);
- ca.crl, revoked.json: the fleet CA's revocation list, every certificate of that CA
  pointing at crl_url (fleet_revocation.py); a host in `revoked` gets its certificate
  revoked, and no other.

Both CA keys are encrypted at rest (PKCS#8, BestAvailableEncryption) with the passphrase
from ZK_PKI_PASSPHRASE or passphrase_file (fleet_secrets.py); a CA key found unencrypted
(made by an older version) is encrypted in place.

A certificate is issued again, with a fresh key, only when it is missing, not signed by
its current CA (the CA was replaced), expiring within renew_days, or its names differ from
the spec (an address changed); otherwise nothing is written, so a second run changes
nothing. Private keys are created 0600, every file is replaced atomically.

Prints one JSON object: {"changed": bool, "created": [CA names], "encrypted": [CA names],
"issued": [paths], "revoked": [paths], "ca_not_after": ISO date of the CA that expires
first}. Exit status 1
with a message on stderr when the directory is inconsistent (a CA certificate without its
key, say) or the passphrase cannot open a CA key: nothing is guessed.
"""

from __future__ import annotations

import datetime
import ipaddress
import json
import sys
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from fleet_revocation import distribution_point, distribution_urls, revoke_hosts, write_crl
from fleet_secrets import (
    encrypted_key_bytes,
    fail,
    is_encrypted,
    load_ca_key,
    passphrase,
    super_identity,
    write_atomically,
)

# datetime.UTC is 3.11+; the controller may run 3.10 (ansible-core 2.17).
UTC = datetime.timezone.utc  # noqa: UP017
CURVES = {"P-256": ec.SECP256R1, "P-384": ec.SECP384R1}
# Certificates start to be valid a little in the past: the nodes' clocks may lag.
BACKDATE = datetime.timedelta(hours=1)


def now() -> datetime.datetime:
    return datetime.datetime.now(UTC)


def not_after(cert: x509.Certificate) -> datetime.datetime:
    """The end of validity as an aware datetime (cryptography < 42 has only naive ones)."""
    value = getattr(cert, "not_valid_after_utc", None)
    return value if value is not None else cert.not_valid_after.replace(tzinfo=UTC)


def key_bytes(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def cert_bytes(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def common_name(name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])


def make_ca(directory: Path, stem: str, ca_name: str, spec: dict, secret: bytes) -> None:
    key = ec.generate_private_key(CURVES[spec["curve"]]())
    name = common_name(ca_name)
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
    write_atomically(directory / f"{stem}.key", encrypted_key_bytes(key, secret), 0o600)
    write_atomically(directory / f"{stem}.pem", cert_bytes(cert), 0o644)


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
            and san_set(cert) == wanted_san_set(entry["names"])
            and distribution_urls(cert) == entry["crl_urls"])


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
    for url in entry["crl_urls"]:
        builder = builder.add_extension(distribution_point(url), critical=False)
    cert = builder.sign(ca_key, hashes.SHA256())
    # The key first: a certificate never names a key that is not there yet.
    write_atomically(directory / f"{entry['path']}.key", key_bytes(key), 0o600)
    write_atomically(directory / f"{entry['path']}.pem", cert_bytes(cert), 0o644)


def wanted_certs(spec: dict) -> list[dict]:
    """The spec's hosts, quorum members and clients as certificates: path, names (the first
    is the CN), the CA that signs it and the CRL it points at (the fleet CA's only)."""
    crl_urls = [spec["crl_url"]] if spec.get("crl_url") else []
    certs = []
    for host, address in spec["hosts"].items():
        names = [host, str(address or host), *spec.get("extra_names", {}).get(host, [])]
        certs.append({"path": f"hosts/{host}", "names": list(dict.fromkeys(names)),
                      "server": True, "ca": "ca", "crl_urls": crl_urls})
        if host in spec["quorum_hosts"]:
            certs.append({"path": f"quorum/{host}", "names": list(dict.fromkeys(names)),
                          "server": True, "ca": "quorum-ca", "crl_urls": []})
    for client in spec["clients"]:
        certs.append({"path": f"clients/{client}", "names": [], "server": False, "ca": "ca",
                      "crl_urls": crl_urls})
    return certs


def authority(directory: Path, stem: str, ca_name: str, spec: dict, secret: bytes,
              ) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey, bool, bool]:
    """A CA made once: its certificate and key, whether it was made now, and whether its
    key was found unencrypted (and is now encrypted)."""
    key_path, cert_path = directory / f"{stem}.key", directory / f"{stem}.pem"
    created = False
    if not key_path.exists() and not cert_path.exists():
        make_ca(directory, stem, ca_name, spec, secret)
        created = True
    elif not (key_path.is_file() and cert_path.is_file()):
        fail(f"{directory} has only one of {stem}.key and {stem}.pem: restore the other from "
             "the backup, or delete both (and every certificate) to make a new CA")
    key, plain = load_ca_key(key_path, secret)
    if plain:
        write_atomically(key_path, encrypted_key_bytes(key, secret), 0o600)
    key_path.chmod(0o600)
    return x509.load_pem_x509_certificate(cert_path.read_bytes()), key, created, plain


def check_spec(spec: dict) -> None:
    if spec.get("curve") not in CURVES:
        fail(f"curve must be one of {', '.join(CURVES)}")
    unknown = set(spec.get("quorum_hosts", [])) - set(spec["hosts"])
    if unknown:
        fail(f"quorum_hosts not among hosts: {', '.join(sorted(unknown))}")
    both = set(spec.get("revoked", [])) & set(spec.get("quorum_hosts", []))
    if both:
        fail(f"a ZooKeeper server cannot be revoked (replace the quorum CA): {', '.join(both)}")


def main() -> None:
    spec = json.load(sys.stdin)
    spec.setdefault("quorum_hosts", [])
    check_spec(spec)
    revoked_hosts = spec.get("revoked", [])
    spec["hosts"] = {h: a for h, a in spec["hosts"].items() if h not in revoked_hosts}
    directory = Path(spec["dir"]).expanduser()
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    directory.chmod(0o700)
    names = {"ca": spec["ca_name"], "quorum-ca": spec["quorum_ca_name"]}
    locked = any(is_encrypted(directory / f"{stem}.key") for stem in names)
    passphrase_file = spec.get("passphrase_file")
    secret, new_passphrase = passphrase(
        Path(passphrase_file).expanduser() if passphrase_file else None, may_create=not locked)
    cas, created, encrypted = {}, [], []
    for stem, ca_name in names.items():
        cert, key, made, was_plain = authority(directory, stem, ca_name, spec, secret)
        cas[stem] = (cert, key)
        created += [stem] if made else []
        encrypted += [stem] if was_plain and not made else []
    revoked = revoke_hosts(directory, revoked_hosts)
    crl_changed = write_crl(directory, *cas["ca"], not_after(cas["ca"][0]))
    renew_before = now() + datetime.timedelta(days=int(spec["renew_days"]))
    issued = []
    for entry in wanted_certs(spec):
        ca, ca_key = cas[entry["ca"]]
        if not current(directory, entry, ca, renew_before):
            issue(directory, entry, ca, ca_key, spec)
            issued.append(entry["path"])
        (directory / f"{entry['path']}.key").chmod(0o600)
    super_changed = super_identity(directory)
    first_expiry = min(not_after(cert) for cert, _ in cas.values())
    print(json.dumps({
        "changed": bool(created or encrypted or issued or revoked or crl_changed
                        or new_passphrase or super_changed),
        "created": created, "encrypted": encrypted, "issued": issued, "revoked": revoked,
        "ca_not_after": first_expiry.isoformat()}))


if __name__ == "__main__":
    main()
