"""Verifiers of shared secrets that must reach a bridge without travelling in clear: an OCPP
charge point's password (security profile 1) is configured in the core, but the bridge that
checks it learns its devices from the bus, which home automation reads too.

The core publishes `scrypt$<salt hex>$<hash hex>,…` — one hash per form the secret may take
(an OCPP 1.6 AuthorizationKey is 20 bytes written as 40 hex digits; boxes send either the
text or the bytes it stands for). The salt is derived from the device, so that the retained
config does not change on every publish, and differs from device to device.
"""

from __future__ import annotations

import functools
import hashlib
import hmac

SCRYPT_N = 2**13
SCRYPT_R = 8
SCRYPT_P = 1


def secret_forms(secret: bytes) -> list[bytes]:
    """The byte strings a secret may stand for: itself, and the bytes of a hex string."""
    forms = [secret]
    text = secret.decode("ascii", errors="ignore")
    if len(text) == len(secret) and len(text) % 2 == 0 and len(text) >= 2:
        try:
            decoded = bytes.fromhex(text)
        except ValueError:
            decoded = b""
        if decoded and decoded not in forms:
            forms.append(decoded)
    return forms


def _hash(form: bytes, salt: bytes) -> bytes:
    return hashlib.scrypt(form, salt=salt, n=SCRYPT_N, r=SCRYPT_R, p=SCRYPT_P, dklen=32)


@functools.lru_cache(maxsize=256)
def make_verifier(secret: str, context: str) -> str:
    """The verifier of `secret` for one device (`context`, e.g. its id and address)."""
    salt = hashlib.sha256(b"chargebus-secret\0" + context.encode()).digest()[:16]
    hashes = ",".join(_hash(form, salt).hex() for form in secret_forms(secret.encode()))
    return f"scrypt${salt.hex()}${hashes}"


def check(verifier: str, offered: bytes) -> bool:
    """Whether `offered` (raw, or hex of the configured bytes) matches; False for a verifier
    that is not one. Every comparison runs, so timing tells nothing of which matched."""
    scheme, _, rest = verifier.partition("$")
    salt_hex, _, hashes = rest.partition("$")
    if scheme != "scrypt" or not salt_hex or not hashes:
        return False
    try:
        salt = bytes.fromhex(salt_hex)
        expected = [bytes.fromhex(h) for h in hashes.split(",")]
    except ValueError:
        return False
    found = False
    for form in secret_forms(offered):
        digest = _hash(form, salt)
        for hashed in expected:
            found |= hmac.compare_digest(digest, hashed)
    return found
