"""Token datasets: int32 sequences (N, L) for discrete flow matching and masked diffusion.

* `digits_tokens`: scikit-learn's 8x8 digits as 64 tokens with 17 gray levels (0..16), the
  same 1500 / 297 split as the "digits" image dataset; V = 17.
* `pydoc_text`: character-level English from Python's own `pydoc_data.topics` (~465k
  characters, no download): the first 90% of the text is "train", the rest "test"
  (held out, contiguous); V = the characters of the whole corpus (sorted), windows of `seq_len`.
* `TfdsTextSource`: byte-level (V = 256) windows of a TFDS text dataset read from a `data_dir`
  (e.g. lm1b, wikipedia, tiny_shakespeare) through `tfds.data_source`; for GPU runs.
"""

from __future__ import annotations

import functools

import numpy as np

from flowjax.data import _sources

DIGITS_LEVELS = 17
TEXT_TRAIN_FRACTION = 0.9


class TokenArraySource:
    """A finite in-memory token dataset: x (N, L) int32, labels (N,) int32."""

    def __init__(self, name: str, x: np.ndarray, labels: np.ndarray, vocab_size: int):
        if len(x) == 0 or len(x) != len(labels):
            raise ValueError(f"dataset {name!r}: {len(x)} records and {len(labels)} labels")
        self.name, self.vocab_size = name, int(vocab_size)
        self._x, self._labels = np.asarray(x, np.int32), np.asarray(labels, np.int32)
        self.shape = tuple(self._x.shape[1:])

    def __len__(self) -> int:
        return len(self._x)

    def read(self, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return self._x[indices], self._labels[indices]


def digits_tokens(split: str) -> tuple[np.ndarray, np.ndarray]:
    """(x int32 (N, 64) in [0, 17), labels (N,)): digits pixels as gray-level tokens."""
    x, y = _sources.digits_arrays(split)
    return np.rint((x.reshape(len(x), -1) + 1.0) * 8.0).astype(np.int32), y


@functools.lru_cache(maxsize=1)
def _pydoc_corpus() -> str:
    from pydoc_data.topics import topics

    return "\n".join(topics[k] for k in sorted(topics))


@functools.lru_cache(maxsize=1)
def text_vocab() -> str:
    """The sorted characters of the whole pydoc corpus (token id = position)."""
    return "".join(sorted(set(_pydoc_corpus())))


def encode_text(text: str) -> np.ndarray:
    """Characters -> token ids of `text_vocab()` (ValueError for an unknown character)."""
    table = {c: i for i, c in enumerate(text_vocab())}
    try:
        return np.array([table[c] for c in text], np.int32)
    except KeyError as e:
        raise ValueError(f"character {e.args[0]!r} is not in the pydoc vocabulary") from None


def decode_text(ids) -> str:
    vocab = text_vocab()
    return "".join(vocab[int(i)] for i in np.asarray(ids).reshape(-1))


def pydoc_text(split: str, seq_len: int = 64) -> np.ndarray:
    """Non-overlapping windows (N, seq_len) int32 of the train (first 90%) or test split."""
    if isinstance(seq_len, bool) or not isinstance(seq_len, int) or seq_len < 1:
        raise ValueError(f"seq_len must be a positive int, got {seq_len!r}")
    ids = _encoded()
    cut = int(len(ids) * TEXT_TRAIN_FRACTION)
    parts = {"train": ids[:cut], "test": ids[cut:]}
    if split not in parts:
        raise ValueError(f"split must be 'train' or 'test' for 'pydoc_text'; got {split!r}")
    part = parts[split]
    n = len(part) // seq_len
    return part[: n * seq_len].reshape(n, seq_len)


@functools.lru_cache(maxsize=1)
def _encoded() -> np.ndarray:
    return encode_text(_pydoc_corpus())


class TfdsTextSource:
    """Byte-level windows of a TFDS text dataset: record i -> its first `seq_len` UTF-8 bytes,
    right-padded with byte 0; V = 256."""

    vocab_size = 256

    def __init__(self, name, tfds_name, *, split, data_dir, seq_len=128, text_key="text"):
        import tensorflow_datasets as tfds

        self.name, self.shape, self._key = name, (int(seq_len),), text_key
        self._source = tfds.data_source(tfds_name, split=split, data_dir=data_dir)

    def __len__(self) -> int:
        return len(self._source)

    def read(self, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        out = np.zeros((len(indices), self.shape[0]), np.int32)
        for row, i in enumerate(indices):
            text = self._source[int(i)][self._key]
            raw = text if isinstance(text, bytes) else str(text).encode("utf-8")
            b = np.frombuffer(raw[: self.shape[0]], np.uint8)
            out[row, : len(b)] = b
        return out, np.zeros(len(indices), np.int32)


def _open_digits_tokens(split, seed, data_dir, **kwargs):
    del seed, data_dir
    if kwargs:
        raise ValueError(f"dataset 'digits_tokens' takes no source options; got {sorted(kwargs)}")
    return TokenArraySource("digits_tokens", *digits_tokens(split), DIGITS_LEVELS)


def _open_pydoc_text(split, seed, data_dir, seq_len=64, **kwargs):
    del seed, data_dir
    if kwargs:
        raise ValueError(f"dataset 'pydoc_text' takes only seq_len=; got {sorted(kwargs)}")
    x = pydoc_text(split, seq_len)
    return TokenArraySource("pydoc_text", x, np.zeros(len(x), np.int32), len(text_vocab()))


def _open_tfds_text(split, seed, data_dir, tfds_name="lm1b", seq_len=128, text_key="text"):
    del seed
    return TfdsTextSource(
        "tfds_text", tfds_name, split=split, data_dir=data_dir, seq_len=seq_len, text_key=text_key
    )


def specs(spec_cls) -> dict:
    """The token datasets as `DatasetSpec`s (kind "tokens"; the class is passed in to keep the
    registry the only importer)."""
    return {
        "digits_tokens": spec_cls(
            "digits_tokens",
            (64,),
            10,
            "tokens",
            _open_digits_tokens,
            description="scikit-learn digits as 64 tokens with 17 gray levels (V=17), "
            "1500 train / 297 test",
        ),
        "pydoc_text": spec_cls(
            "pydoc_text",
            (64,),
            None,
            "tokens",
            _open_pydoc_text,
            description="character-level English of pydoc_data.topics, 90/10 contiguous split, "
            "seq_len=64 windows (seq_len= option)",
        ),
        "tfds_text": spec_cls(
            "tfds_text",
            (128,),
            None,
            "tokens",
            _open_tfds_text,
            description="byte-level (V=256) windows of a TFDS text dataset from data_dir "
            "(tfds_name=, seq_len=, text_key= options)",
        ),
    }
