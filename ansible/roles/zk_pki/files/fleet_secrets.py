"""The controller's secrets beside the certificates (used by fleet_pki.py).

- The passphrase that encrypts the CA keys at rest, so that a copy of the secrets
  directory (a backup, a synced folder) does not hand out the power to mint certificates:
  from the environment variable ZK_PKI_PASSPHRASE when set, else from a file kept
  elsewhere (made once, random, 0600, when no encrypted key needs an older one).
- The break-glass `super` identity: its password stays on the controller
  (super.password); the ZooKeeper servers get only its digest (super.digest, the form of
  ZooKeeper's `zookeeper.DigestAuthenticationProvider.superDigest`).
"""

from __future__ import annotations

import base64
import hashlib
import os
import secrets
import string
import sys
import tempfile
from pathlib import Path
from typing import NoReturn

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

PASSPHRASE_ENV = "ZK_PKI_PASSPHRASE"
# The password lookup's alphabet and length, as for the other identities: nothing to
# escape anywhere.
PASSWORD_CHARS = string.ascii_letters + string.digits
PASSWORD_LENGTH = 32
ENCRYPTED_PEM = b"-----BEGIN ENCRYPTED PRIVATE KEY-----"
SUPER_USER = "super"


def fail(message: str) -> NoReturn:
    print(f"fleet_pki: {message}", file=sys.stderr)
    sys.exit(1)


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


def random_password() -> str:
    return "".join(secrets.choice(PASSWORD_CHARS) for _ in range(PASSWORD_LENGTH))


def is_encrypted(path: Path) -> bool:
    return path.is_file() and path.read_bytes().lstrip().startswith(ENCRYPTED_PEM)


def passphrase(path: Path | None, may_create: bool) -> tuple[bytes, bool]:
    """The CA keys' passphrase and whether its file was made now.

    A file is made only when no encrypted key exists (`may_create`): a missing file must
    never silently become a new passphrase that cannot open the old keys.
    """
    from_env = os.environ.get(PASSPHRASE_ENV, "")
    if from_env:
        return from_env.encode(), False
    if path is None:
        fail(f"no passphrase for the CA keys: set {PASSPHRASE_ENV} or zk_pki_passphrase_file")
    if path.is_file():
        path.chmod(0o600)
        text = path.read_text().strip()
        if not text:
            fail(f"{path} is empty: restore the CA keys' passphrase from its backup")
        return text.encode(), False
    if not may_create:
        fail(f"the CA keys are encrypted and {path} is missing: restore it from its backup "
             f"or set {PASSPHRASE_ENV}")
    write_atomically(path, (random_password() + "\n").encode(), 0o600)
    return path.read_text().strip().encode(), True


def load_ca_key(path: Path, secret: bytes) -> tuple[ec.EllipticCurvePrivateKey, bool]:
    """The CA key, and whether it was stored unencrypted (then the caller encrypts it)."""
    data = path.read_bytes()
    plain = not is_encrypted(path)
    try:
        key = serialization.load_pem_private_key(data, password=None if plain else secret)
    except ValueError:
        fail(f"cannot decrypt {path}: wrong passphrase ({PASSPHRASE_ENV} or the passphrase "
             "file)")
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        fail(f"{path} is not an EC key")
    return key, plain


def encrypted_key_bytes(key: ec.EllipticCurvePrivateKey, secret: bytes) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.BestAvailableEncryption(secret))


def super_digest(password: str) -> str:
    """ZooKeeper's DigestAuthenticationProvider.generateDigest: user:base64(sha1(user:pw))."""
    raw = hashlib.sha1(f"{SUPER_USER}:{password}".encode()).digest()
    return f"{SUPER_USER}:{base64.b64encode(raw).decode()}"


def super_identity(directory: Path) -> bool:
    """super.password made once (0600), super.digest kept in step; whether either changed."""
    password_path, digest_path = directory / "super.password", directory / "super.digest"
    changed = False
    if not password_path.is_file():
        write_atomically(password_path, (random_password() + "\n").encode(), 0o600)
        changed = True
    password_path.chmod(0o600)
    digest = super_digest(password_path.read_text().strip()) + "\n"
    if not digest_path.is_file() or digest_path.read_text() != digest:
        write_atomically(digest_path, digest.encode(), 0o600)
        changed = True
    return changed
