"""Secure aggregation by pairwise masking (Bonawitz et al. 2017, the scheme of Flower's SecAgg+ with every
pair of sites as neighbours): the coordinator learns the sum of the sites' vectors and nothing else.

Each site makes an X25519 key pair for the run and sends its public key; the
coordinator relays all of them. Every pair of sites derives a shared seed
(X25519, then HKDF-SHA256 bound to the run and the two names); for round
``i`` the seed expands (ChaCha20 keystream) into a mask of 64-bit integers.
Of each pair, the site whose name sorts first adds the mask and the other
subtracts it, modulo ``2**64``, so the masks cancel in the sum over all
sites, while each site's masked vector is uniformly random to anyone without
its seeds. The cryptography is the ``cryptography`` package's; nothing here
implements a primitive.

The coordinator is trusted to relay keys faithfully and to follow the
protocol (the semi-honest model of SecAgg); sites check that the relayed
list holds at least three distinct sites, themselves among them, so that a
sum always covers two sites besides any one. A site that drops out leaves
its masks in the sum: the run stops with a named error rather than
recovering it (see :mod:`rlae_sc.federated.coordinator`).
"""

from __future__ import annotations

import numpy as np
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from rlae_sc.federated import FederationError

MIN_SITES = 3


class PairwiseMasks:
    """One site's key pair for a run and, once :meth:`agree` has run, its seeds shared with every other site."""

    def __init__(self) -> None:
        self._key = X25519PrivateKey.generate()
        self._seeds: dict[str, tuple[bytes, int]] = {}

    @property
    def public_key(self) -> str:
        """The public key, hex (32 bytes)."""
        return self._key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw).hex()

    def agree(self, me: str, keys: dict[str, str], run: str) -> None:
        """Derive a seed with every other site of ``keys`` (name -> public key, hex) for run ``run``.

        Raises :class:`FederationError` when the list has fewer than
        :data:`MIN_SITES` sites, repeats a key, or does not hold this site's own key.
        """
        if keys.get(me) != self.public_key:
            raise FederationError(f"site {me}: the coordinator relayed a key list without this site's own key")
        if len(keys) < MIN_SITES or len(set(keys.values())) != len(keys):
            raise FederationError(
                f"site {me}: secure aggregation needs at least {MIN_SITES} distinct sites, the key list has "
                f"{len(set(keys.values()))}"
            )
        for peer, hex_key in keys.items():
            if peer == me:
                continue
            shared = self._key.exchange(X25519PublicKey.from_public_bytes(bytes.fromhex(hex_key)))
            pair = "|".join(sorted((me, peer)))
            hkdf = HKDF(algorithm=hashes.SHA256(), length=32, salt=run.encode(), info=f"rlae-sc mask {pair}".encode())
            self._seeds[peer] = (hkdf.derive(shared), 1 if me < peer else -1)

    def mask(self, vector: np.ndarray, index: int) -> np.ndarray:
        """``vector`` (uint64) plus this site's masks for round ``index``, modulo ``2**64``."""
        if not self._seeds:
            raise FederationError("masks requested before the keys were agreed")
        out = np.array(vector, dtype=np.uint64, copy=True)
        for seed, sign in self._seeds.values():
            m = expand(seed, index, len(out))
            if sign > 0:
                out += m
            else:
                out -= m
        return out


def expand(seed: bytes, index: int, length: int) -> np.ndarray:
    """``length`` pseudo-random uint64 from a 32-byte seed and round ``index`` (ChaCha20 keystream)."""
    nonce = bytes(4) + index.to_bytes(12, "little")  # 4-byte block counter, 12-byte nonce: one per round
    stream = Cipher(algorithms.ChaCha20(seed, nonce), mode=None).encryptor().update(bytes(8 * length))
    return np.frombuffer(stream, dtype=np.uint64).copy()
