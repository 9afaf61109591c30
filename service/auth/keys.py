"""Our signing keys (backend-services client assertions): loaded from PEM files, published as a public JWKS."""

import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from joserfc.jwk import ECKey, RSAKey

from service.errors import ConfigurationError

MIN_RSA_BITS = 2048


@dataclass(frozen=True)
class SigningKey:
    """A private key with its kid and alg; only ``public_jwk`` ever leaves the process."""

    kid: str
    alg: str  # RS384 or ES384
    private_key: Any  # a cryptography private key object
    public_jwk: dict[str, Any]

    def __repr__(self) -> str:  # never print the key material
        return f"SigningKey(kid={self.kid!r}, alg={self.alg!r})"


_cache: dict[tuple[str, str | None, str | None], SigningKey] = {}
_cache_lock = threading.Lock()


def load_signing_key(path: str, *, kid: str | None = None, alg: str | None = None) -> SigningKey:
    """Load a PEM private key (RSA ≥ 2048 bits → RS384, EC P-384 → ES384); ConfigurationError when unusable."""
    cache_key = (str(Path(path).resolve()), kid, alg)
    with _cache_lock:
        if cache_key in _cache:
            return _cache[cache_key]
    try:
        pem = Path(path).read_bytes()
    except OSError as exc:
        raise ConfigurationError(f"cannot read the private key file {path}: {exc.strerror}") from exc
    try:
        private_key = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError) as exc:
        raise ConfigurationError(f"{path} is not an unencrypted PEM private key") from exc
    if isinstance(private_key, rsa.RSAPrivateKey):
        if private_key.key_size < MIN_RSA_BITS:
            raise ConfigurationError(f"{path}: RSA keys must have at least {MIN_RSA_BITS} bits")
        jose_key, default_alg = RSAKey.import_key(pem), "RS384"
    elif isinstance(private_key, ec.EllipticCurvePrivateKey) and private_key.curve.name == "secp384r1":
        jose_key, default_alg = ECKey.import_key(pem), "ES384"
    else:
        raise ConfigurationError(f"{path}: use an RSA (RS384) or EC P-384 (ES384) key")
    alg = alg or default_alg
    if alg != default_alg:
        raise ConfigurationError(f"{path}: a {type(jose_key).__name__} cannot sign {alg}")
    kid = kid or jose_key.thumbprint()
    public = {**jose_key.as_dict(private=False), "kid": kid, "alg": alg, "use": "sig", "key_ops": ["verify"]}
    key = SigningKey(kid=kid, alg=alg, private_key=private_key, public_jwk=public)
    with _cache_lock:
        _cache[cache_key] = key
    return key


def public_jwks(keys: list[SigningKey]) -> dict[str, Any]:
    """The JWK Set of the public halves, one entry per kid."""
    seen: dict[str, dict[str, Any]] = {}
    for key in keys:
        seen.setdefault(key.kid, key.public_jwk)
    return {"keys": list(seen.values())}
