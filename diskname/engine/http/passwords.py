"""Memory-hard password hashes (scrypt, from the standard library).

Encoded as ``$scrypt$ln=15,r=8,p=3$<salt>$<hash>`` (base64 without padding), so
the cost can be raised later and old hashes still verify. The parameters are
one of OWASP's equivalent scrypt settings: 32 MiB of memory per hash, about
0.3 s of one core here. Verifying is CPU work: callers run it off the event loop.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import os

LOG_N, R, P = 15, 8, 3
SALT_BYTES, HASH_BYTES = 16, 32
# Bounds on what a stored hash may ask for, so a tampered row cannot exhaust memory.
MAX_LOG_N, MAX_R, MAX_P = 20, 16, 16
MAX_MEMORY = 1 << 30


def hash_password(password: str) -> str:
    """A new salted hash of ``password``."""
    salt = os.urandom(SALT_BYTES)
    digest = _scrypt(password, salt, LOG_N, R, P)
    return f"$scrypt$ln={LOG_N},r={R},p={P}${_b64(salt)}${_b64(digest)}"


def verify_password(password: str, encoded: str) -> bool:
    """Whether ``password`` matches ``encoded``; False for a malformed hash."""
    parsed = _parse(encoded)
    if parsed is None:
        return False
    log_n, r, p, salt, expected = parsed
    return hmac.compare_digest(_scrypt(password, salt, log_n, r, p, len(expected)), expected)


@functools.cache
def dummy_hash() -> str:
    """A hash to verify against when the user does not exist, so that an unknown
    name costs as much time as a wrong password and names cannot be probed."""
    return hash_password(base64.b64encode(os.urandom(18)).decode())


def _scrypt(
    password: str, salt: bytes, log_n: int, r: int, p: int, size: int = HASH_BYTES
) -> bytes:
    return hashlib.scrypt(
        password.encode(), salt=salt, n=1 << log_n, r=r, p=p, maxmem=MAX_MEMORY, dklen=size
    )


def _parse(encoded: str) -> tuple[int, int, int, bytes, bytes] | None:
    parts = encoded.split("$")
    if len(parts) != 5 or parts[0] or parts[1] != "scrypt":
        return None
    try:
        params = dict(item.split("=", 1) for item in parts[2].split(","))
        log_n, r, p = int(params["ln"]), int(params["r"]), int(params["p"])
        salt, digest = _unb64(parts[3]), _unb64(parts[4])
    except (ValueError, KeyError):
        return None
    if not (1 <= log_n <= MAX_LOG_N and 1 <= r <= MAX_R and 1 <= p <= MAX_P and digest):
        return None
    return log_n, r, p, salt, digest


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
