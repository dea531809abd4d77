"""Revocation of the fleet CA's certificates (used by fleet_pki.py).

Every certificate of the fleet's CA names a CRL distribution point, a `file:` URL on the
ZooKeeper servers, where the zookeeper role installs ca.crl; the servers check it
(`ssl.crl=true`) on every TLS handshake of their client port, reading the file again
when it changes. A host revoked in the spec has its certificate's serial recorded for
good in revoked.json, its key and certificate deleted (never deployed nor renewed again),
and ca.crl lists every recorded serial. The CRL is pushed, not fetched, so it stays valid
as long as the CA (its next update is the CA's end): a run that does not happen never
locks the fleet out.
"""

from __future__ import annotations

import datetime
import json
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from fleet_secrets import write_atomically

BACKDATE = datetime.timedelta(hours=1)


def distribution_point(url: str) -> x509.CRLDistributionPoints:
    return x509.CRLDistributionPoints([x509.DistributionPoint(
        full_name=[x509.UniformResourceIdentifier(url)], relative_name=None, reasons=None,
        crl_issuer=None)])


def distribution_urls(cert: x509.Certificate) -> list[str]:
    try:
        points = cert.extensions.get_extension_for_class(x509.CRLDistributionPoints).value
    except x509.ExtensionNotFound:
        return []
    return [str(name.value) for point in points for name in point.full_name or []]


def recorded(directory: Path) -> dict[str, str]:
    """Revoked serials (decimal strings) -> the host whose certificate it was."""
    path = directory / "revoked.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def revoke_hosts(directory: Path, hosts: list[str]) -> list[str]:
    """Record the serial of each revoked host's certificate, then delete its key and
    certificate; the paths revoked now."""
    serials = recorded(directory)
    revoked = []
    for host in hosts:
        cert_path = directory / "hosts" / f"{host}.pem"
        if not cert_path.is_file():
            continue
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
        serials[str(cert.serial_number)] = host
        write_atomically(directory / "revoked.json",
                         (json.dumps(serials, indent=1, sort_keys=True) + "\n").encode(), 0o600)
        cert_path.unlink()
        (directory / "hosts" / f"{host}.key").unlink(missing_ok=True)
        revoked.append(f"hosts/{host}")
    return revoked


def crl_is_current(path: Path, ca: x509.Certificate, serials: set[int]) -> bool:
    if not path.is_file():
        return False
    try:
        crl = x509.load_der_x509_crl(path.read_bytes())
    except ValueError:
        return False
    return (crl.issuer == ca.subject and crl.is_signature_valid(ca.public_key())
            and {entry.serial_number for entry in crl} == serials)


def write_crl(directory: Path, ca: x509.Certificate, ca_key: ec.EllipticCurvePrivateKey,
              ca_not_after: datetime.datetime) -> bool:
    """ca.crl (DER) listing every recorded serial, signed by the fleet's CA, written only
    when it differs; whether it was written."""
    serials = {int(serial) for serial in recorded(directory)}
    path = directory / "ca.crl"
    if crl_is_current(path, ca, serials):
        return False
    start = datetime.datetime.now(datetime.timezone.utc) - BACKDATE  # noqa: UP017 (3.10)
    builder = (x509.CertificateRevocationListBuilder().issuer_name(ca.subject)
               .last_update(start).next_update(ca_not_after))
    for serial in sorted(serials):
        builder = builder.add_revoked_certificate(
            x509.RevokedCertificateBuilder().serial_number(serial).revocation_date(start)
            .build())
    crl = builder.sign(ca_key, hashes.SHA256())
    write_atomically(path, crl.public_bytes(serialization.Encoding.DER), 0o644)
    return True
