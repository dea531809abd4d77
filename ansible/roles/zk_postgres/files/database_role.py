"""The collectors' PostgreSQL role and database, made once and kept as the inventory says.

Run by the zk_postgres role on the database host, as the `postgres` system user (psql
over the local socket, peer authentication: the cluster's superuser), with this file as
python3's program on stdin, so nothing is installed on the node:

    python3 - --user zk_collector --database zk_collector --port 5432 \\
        --passfile /etc/postgresql/<version>/main/zk-sensor/database.pgpass

Makes, where missing, the role (LOGIN) and the database, owned by the role (the collector
creates its own tables in it); gives the role back LOGIN or the database back to the role
if someone took them; and sets the role's password from the passfile (libpq's format, the
password in the last field, written by the zk_pki role from the controller) only when the
role's stored SCRAM-SHA-256 verifier does not match it. The password never reaches the
server, a command line or a log: the server gets a verifier computed here, as psql's
\\password does. Then checks that pg_hba.conf, as the server reads it now, has no error.

Prints one JSON object: {"changed": bool, "done": [what was done]}. Exit status 1 with a
message on stderr when psql fails or pg_hba.conf has errors.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import hmac
import json
import os
import subprocess
import sys

# PostgreSQL's own default (scram_iterations, not settable before 16).
ITERATIONS = 4096


def fail(message: str) -> None:
    print(f"database_role: {message}", file=sys.stderr)
    sys.exit(1)


def literal(text: str) -> str:
    """A SQL string literal (standard_conforming_strings is on: only quotes double)."""
    return "'" + text.replace("'", "''") + "'"


def identifier(text: str) -> str:
    return '"' + text.replace('"', '""') + '"'


def psql(port: int, sql: str) -> list[list[str]]:
    """Run SQL (on stdin, never on the command line) in the `postgres` database; the rows
    of its last query, fields split on the unit separator."""
    result = subprocess.run(
        ["psql", "--no-psqlrc", "--quiet", "--no-align", "--tuples-only",
         "--field-separator=\x1f", "--set=ON_ERROR_STOP=1", f"--port={port}",
         "--dbname=postgres"],
        input=sql, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        fail(f"psql failed ({result.returncode}): {result.stderr.strip()}")
    return [line.split("\x1f") for line in result.stdout.splitlines() if line]


def read_password(passfile: str) -> str:
    """The password of the passfile's first entry (its last field, unescaped)."""
    with open(passfile, encoding="utf-8") as handle:
        line = handle.readline().rstrip("\n")
    fields, field, escaped = [], "", False
    for char in line:
        if escaped:
            field, escaped = field + char, False
        elif char == "\\":
            escaped = True
        elif char == ":":
            fields.append(field)
            field = ""
        else:
            field += char
    fields.append(field)
    if len(fields) != 5 or not fields[4]:
        fail(f"{passfile} is not a libpq password file (host:port:database:user:password)")
    return fields[4]


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def scram_keys(password: str, salt: bytes, iterations: int) -> tuple[bytes, bytes]:
    """StoredKey and ServerKey of RFC 5802/7677 (SCRAM-SHA-256). The password is ASCII
    letters and digits, which SASLprep leaves as they are."""
    salted = hashlib.pbkdf2_hmac("sha256", password.encode("utf-8"), salt, iterations)
    client_key = hmac.new(salted, b"Client Key", "sha256").digest()
    server_key = hmac.new(salted, b"Server Key", "sha256").digest()
    return hashlib.sha256(client_key).digest(), server_key


def verifier(password: str) -> str:
    """The verifier PostgreSQL stores: SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>."""
    salt = os.urandom(16)
    stored_key, server_key = scram_keys(password, salt, ITERATIONS)
    return f"SCRAM-SHA-256${ITERATIONS}:{b64(salt)}${b64(stored_key)}:{b64(server_key)}"


def matches(stored: str, password: str) -> bool:
    """Whether a stored verifier is one of this password (any salt, any iteration count)."""
    try:
        method, rest = stored.split("$", 1)
        params, keys = rest.split("$", 1)
        iterations, salt = params.split(":", 1)
        stored_key, server_key = keys.split(":", 1)
        if method != "SCRAM-SHA-256":
            return False
        mine = scram_keys(password, base64.b64decode(salt), int(iterations))
        return (hmac.compare_digest(mine[0], base64.b64decode(stored_key))
                and hmac.compare_digest(mine[1], base64.b64decode(server_key)))
    except ValueError:  # md5..., a plain text, a malformed one (binascii.Error too)
        return False


def main() -> None:
    parser = argparse.ArgumentParser(prog="database_role.py")
    parser.add_argument("--user", required=True)
    parser.add_argument("--database", required=True)
    parser.add_argument("--port", type=int, default=5432)
    parser.add_argument("--passfile", required=True)
    args = parser.parse_args()
    password = read_password(args.passfile)
    role, database = identifier(args.user), identifier(args.database)
    done = []

    found = psql(args.port, "SELECT rolcanlogin, coalesce(rolpassword, '') FROM pg_authid "
                            f"WHERE rolname = {literal(args.user)}")
    if not found:
        psql(args.port, f"CREATE ROLE {role} LOGIN PASSWORD {literal(verifier(password))}")
        done.append(f"created role {args.user}")
    else:
        can_login, stored = found[0]
        if can_login != "t":
            psql(args.port, f"ALTER ROLE {role} LOGIN")
            done.append(f"allowed role {args.user} to log in")
        if not matches(stored, password):
            psql(args.port, f"ALTER ROLE {role} PASSWORD {literal(verifier(password))}")
            done.append(f"set the password of role {args.user}")

    found = psql(args.port, "SELECT pg_get_userbyid(datdba) FROM pg_database "
                            f"WHERE datname = {literal(args.database)}")
    if not found:
        # Not in a transaction: psql sends it alone.
        psql(args.port, f"CREATE DATABASE {database} OWNER {role}")
        done.append(f"created database {args.database}")
    elif found[0][0] != args.user:
        psql(args.port, f"ALTER DATABASE {database} OWNER TO {role}")
        done.append(f"gave database {args.database} to {args.user}")

    errors = psql(args.port, "SELECT line_number, error FROM pg_hba_file_rules "
                             "WHERE error IS NOT NULL")
    if errors:
        fail("pg_hba.conf: " + "; ".join(f"line {n}: {e}" for n, e in errors))
    print(json.dumps({"changed": bool(done), "done": done}))


if __name__ == "__main__":
    main()
