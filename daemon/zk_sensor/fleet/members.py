"""The fleet's member identities: the members file `acl apply --members-file` reads, and
the list of revoked ones (`<ns>/revoked`) that `node revoke` keeps.

A members file names one ZooKeeper digest id per line, `USER:BASE64DIGEST` (ZooKeeper's
own form, base64 of SHA-1 of `user:password`, as `zk-sensorctl acl digest` prints it):
the operator never needs the nodes' passwords. Garbage is refused with its line number
before anything is written.
"""

import base64
import binascii
from pathlib import Path

from zk_sensor.config.sources import SettingsError
from zk_sensor.fleet.layout import Layout
from zk_sensor.fleet.payloads import Garbage, Revoked
from zk_sensor.fleet.validation import InvalidValue
from zk_sensor.zk.access import USER_PATTERN_FORBIDDEN
from zk_sensor.zk.errors import NoNodeError
from zk_sensor.zk.interface import Zk

SHA1_BYTES = 20


class InvalidRevoked(InvalidValue):
    """`revoked` holds garbage: nothing is written until an operator looks at it."""


def parse_digest_id(text: str) -> str | None:
    """The digest id `text` is, or None if it is not `USER:BASE64(SHA-1)`."""
    user, colon, digest = text.partition(":")
    if not colon or not user or USER_PATTERN_FORBIDDEN & set(user):
        return None
    try:
        raw = base64.b64decode(digest, validate=True)
    except (binascii.Error, ValueError):
        return None
    return text if len(raw) == SHA1_BYTES else None


def read_members_file(path_text: str) -> list[str]:
    """The digest ids of a members file; SettingsError (one line) for any garbage."""
    path = Path(path_text)
    try:
        lines = path.read_text().splitlines()
    except (OSError, UnicodeDecodeError) as error:
        raise SettingsError(f"cannot read --members-file {path}: {error}") from None
    members: list[str] = []
    for number, line in enumerate(lines, 1):
        text = line.strip()
        if not text or text.startswith("#"):
            continue
        member = parse_digest_id(text)
        if member is None:
            raise SettingsError(f"--members-file {path} line {number}: not "
                                "USER:BASE64DIGEST (see `zk-sensorctl acl digest`)")
        if member.partition(":")[0] in {known.partition(":")[0] for known in members}:
            raise SettingsError(f"--members-file {path} line {number}: user "
                                f"{member.partition(':')[0]!r} named twice")
        members.append(member)
    if not members:
        raise SettingsError(f"--members-file {path} names no member")
    return members


def encode_revoked(users: list[str]) -> bytes:
    return Revoked(tuple(users)).encode()


def decode_revoked(data: bytes) -> list[str]:
    """Raises InvalidRevoked for anything but a list of user names: the older contract the
    tests use; `Revoked.decode` returns Garbage instead."""
    revoked = Revoked.decode(data)
    if isinstance(revoked, Garbage):
        raise InvalidRevoked(revoked.reason)
    return list(revoked.users)


def read_revoked(zk: Zk, layout: Layout) -> list[str]:
    """The revoked user names; raises InvalidRevoked for garbage, so nothing is written
    until an operator has looked at it."""
    try:
        data, _ = zk.get(layout.revoked)
    except NoNodeError:
        return []
    return decode_revoked(data)
