"""Sense dictionary: the teacher's last-layer vectors of each word's occurrences, k-means-clustered per word.

Built in two resumable steps under `<sense_dir>`: `occurrences/chunk-NNNNN.npz` (one per
`sense_chunk_texts` corpus texts; a rerun skips the chunks on disk) and then `senses.safetensors` +
`words.json` (the centroids of every word, rows `offsets[i]:offsets[i+1]` for `words[i]`), manifest last.
A word's occurrence vector is the mean of the teacher's final hidden states (after the last norm) over
its subword tokens, so multi-token words get word-level senses directly.
"""

from __future__ import annotations

import json
import logging
import shutil
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save
from tqdm import tqdm

from dataset.records import read_records
from run_config.runtime import atomic_open, config_hash, fingerprint, read_manifest, write_json, write_manifest
from training.data import pad_batch
from training.dskd.words import TokenTexts, word_spans

log = logging.getLogger(__name__)
SENSES_FILE = "senses.safetensors"
WORDS_FILE = "words.json"
CHUNK_DIR = "occurrences"
CHUNK_SPEC = "spec.json"


@dataclass(frozen=True)
class SenseDictionary:
    """Sense centroids of each word: `vectors[offsets[i]:offsets[i+1]]` belong to `words[i]`."""

    words: list[str]
    vectors: torch.Tensor
    offsets: torch.Tensor

    def __post_init__(self) -> None:
        object.__setattr__(self, "_index", {w: i for i, w in enumerate(self.words)})

    def __contains__(self, word: str) -> bool:
        return word in self._index

    def __len__(self) -> int:
        return len(self.words)

    def index(self, word: str) -> int:
        return self._index[word]

    def rows(self, word: str) -> range:
        """Row numbers of `word`'s senses in `vectors`."""
        i = self._index[word]
        return range(int(self.offsets[i]), int(self.offsets[i + 1]))

    def senses(self, word: str) -> torch.Tensor:
        r = self.rows(word)
        return self.vectors[r.start : r.stop]

    def save(self, out_dir: Path) -> None:
        """Write `senses.safetensors` and `words.json` atomically."""
        with atomic_open(out_dir / SENSES_FILE, "wb", encoding=None) as f:
            f.write(save({"vectors": self.vectors.contiguous(), "offsets": self.offsets.contiguous()}))
        write_json(out_dir / WORDS_FILE, self.words)

    @classmethod
    def load(cls, out_dir: Path) -> SenseDictionary:
        tensors = load_file(str(out_dir / SENSES_FILE))
        words = json.loads((out_dir / WORDS_FILE).read_text(encoding="utf-8"))
        return cls(words, tensors["vectors"], tensors["offsets"])


def corpus_texts(paths: list[str], max_texts: int | None = None) -> list[str]:
    """Return the distinct contexts and definitions of the records in `paths`, in file order."""
    seen: dict[str, None] = {}
    for path in paths:
        for record in read_records(path):
            for text in (record.context, record.definition):
                seen.setdefault(text, None)
                if max_texts is not None and len(seen) >= max_texts:
                    return list(seen)
    return list(seen)


def chunk_spec(cfg: Any, teacher_name: str) -> dict:
    """Everything the occurrence chunks depend on (a change starts them over)."""
    return {
        "teacher": teacher_name,
        "dtype": cfg.dtype,
        "corpus": fingerprint(cfg.corpus_paths),
        "max_texts": cfg.sense_max_texts,
        "chunk_texts": cfg.sense_chunk_texts,
        "max_occurrences": cfg.sense_max_occurrences,
        "cutoff_len": cfg.cutoff_len,
    }


def sense_spec(cfg: Any, teacher_name: str) -> dict:
    """Everything the finished dictionary depends on."""
    return {
        **chunk_spec(cfg, teacher_name),
        "k": cfg.sense_k,
        "min_per_cluster": cfg.sense_min_per_cluster,
        "n_init": cfg.sense_kmeans_n_init,
        "seed": cfg.seed,
    }


def _chunk_path(chunk_dir: Path, i: int) -> Path:
    return chunk_dir / f"chunk-{i:05d}.npz"


def _batches(items: list, size: int) -> Iterator[list]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


@torch.no_grad()
def encode_occurrences(
    teacher: Any, tokenizer: Any, texts: list[str], cutoff_len: int, batch_size: int, device: torch.device
) -> Iterator[tuple[str, np.ndarray]]:
    """Yield (word, vector) for every word occurrence in `texts` (teacher's final hidden states)."""
    token_texts = TokenTexts(tokenizer)
    bos = [tokenizer.bos_token_id] if tokenizer.bos_token_id is not None else []
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    decoder = teacher.base_model
    for batch in _batches(texts, batch_size):
        seqs = [(bos + tokenizer(t, add_special_tokens=False)["input_ids"])[:cutoff_len] for t in batch]
        padded = pad_batch([{"input_ids": s, "labels": s} for s in seqs], pad_id)
        hidden = (
            decoder(input_ids=padded["input_ids"].to(device), attention_mask=padded["attention_mask"].to(device))
            .last_hidden_state.float()
            .cpu()
        )
        for row, seq in enumerate(seqs):
            for span in word_spans(seq, token_texts, begin=len(bos)):
                yield span.word, hidden[row, span.start : span.end].mean(0).numpy()


def collect_occurrences(
    teacher: Any,
    tokenizer: Any,
    texts: list[str],
    chunk_dir: Path,
    spec: dict,
    chunk_texts: int,
    max_occurrences: int,
    cutoff_len: int,
    batch_size: int,
    device: torch.device,
) -> int:
    """Write the occurrence chunks missing in `chunk_dir`; return how many were computed.

    At most `max_occurrences` vectors are kept per word, the first ones in corpus order, so a resumed
    run writes exactly what an uninterrupted one would.
    """
    spec_path = chunk_dir / CHUNK_SPEC
    if spec_path.is_file() and json.loads(spec_path.read_text(encoding="utf-8")) != spec:
        log.info("sense corpus or teacher changed: starting the occurrence chunks in %s over", chunk_dir)
        shutil.rmtree(chunk_dir)
    chunk_dir.mkdir(parents=True, exist_ok=True)
    write_json(spec_path, spec)
    counts: Counter = Counter()
    computed = 0
    n_chunks = (len(texts) + chunk_texts - 1) // chunk_texts
    for i in tqdm(range(n_chunks), desc="sense occurrences", unit=" chunks", disable=None):
        path = _chunk_path(chunk_dir, i)
        if path.is_file():
            with np.load(path) as z:
                counts.update(z["words"][z["word_of"]].tolist())
            continue
        words: dict[str, int] = {}
        word_of: list[int] = []
        vectors: list[np.ndarray] = []
        chunk = texts[i * chunk_texts : (i + 1) * chunk_texts]
        for word, vector in encode_occurrences(teacher, tokenizer, chunk, cutoff_len, batch_size, device):
            if counts[word] >= max_occurrences:
                continue
            counts[word] += 1
            word_of.append(words.setdefault(word, len(words)))
            vectors.append(vector)
        d = teacher.config.hidden_size
        with atomic_open(path, "wb", encoding=None) as f:
            np.savez(
                f,
                words=np.array(list(words), dtype=str),
                word_of=np.array(word_of, dtype=np.int32),
                vectors=np.stack(vectors).astype(np.float16) if vectors else np.zeros((0, d), np.float16),
            )
        computed += 1
    return computed


def load_occurrences(chunk_dir: Path) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Return (words, word index of each vector, vectors) over every chunk, in corpus order."""
    index: dict[str, int] = {}
    word_of: list[np.ndarray] = []
    vectors: list[np.ndarray] = []
    for path in sorted(chunk_dir.glob("chunk-*.npz")):
        with np.load(path) as z:
            remap = np.array([index.setdefault(w, len(index)) for w in z["words"].tolist()], dtype=np.int64)
            word_of.append(remap[z["word_of"]] if len(z["word_of"]) else np.zeros(0, np.int64))
            vectors.append(z["vectors"])
    if not vectors:
        return [], np.zeros(0, np.int64), np.zeros((0, 0), np.float16)
    return list(index), np.concatenate(word_of), np.concatenate(vectors)


def senses_per_word(n_occurrences: int, k: int, min_per_cluster: int) -> int:
    """Clusters for a word seen `n_occurrences` times: k, fewer for rare words, at least one."""
    return max(1, min(k, n_occurrences // min_per_cluster))


def cluster_word(x: np.ndarray, k: int, n_init: int, seed: int) -> np.ndarray:
    """Return the k-means centroids of one word's vectors (float32, at most one per distinct vector)."""
    k = min(k, len(np.unique(x, axis=0)))
    if k == 1:
        return x.mean(0, keepdims=True)
    from sklearn.cluster import KMeans

    return KMeans(n_clusters=k, n_init=n_init, random_state=seed).fit(x).cluster_centers_.astype(np.float32)


def cluster_senses(
    words: list[str], word_of: np.ndarray, vectors: np.ndarray, k: int, min_per_cluster: int, n_init: int, seed: int
) -> SenseDictionary:
    """Cluster every word's occurrence vectors into its sense centroids (words sorted alphabetically)."""
    order = np.argsort(word_of, kind="stable")
    bounds = np.searchsorted(word_of[order], np.arange(len(words) + 1))
    blocks: dict[str, np.ndarray] = {}
    for i in tqdm(range(len(words)), desc="sense k-means", unit=" words", disable=None):
        x = vectors[order[bounds[i] : bounds[i + 1]]].astype(np.float32)
        blocks[words[i]] = cluster_word(x, senses_per_word(len(x), k, min_per_cluster), n_init, seed)
    names = sorted(blocks)
    sizes = [len(blocks[w]) for w in names]
    offsets = torch.tensor(np.concatenate([[0], np.cumsum(sizes)]), dtype=torch.long)
    d = vectors.shape[1] if vectors.ndim == 2 else 0
    stacked = np.concatenate([blocks[w] for w in names]) if names else np.zeros((0, d), np.float32)
    return SenseDictionary(names, torch.from_numpy(np.ascontiguousarray(stacked, dtype=np.float32)), offsets)


def build_sense_dictionary(
    cfg: Any, teacher: Any, tokenizer: Any, teacher_name: str, device: torch.device
) -> SenseDictionary:
    """Build (or reuse, when its manifest matches) the sense dictionary of `cfg.corpus_paths`."""
    out = cfg.senses_path
    spec = sense_spec(cfg, teacher_name)
    manifest = read_manifest(out)
    if not cfg.force and manifest and manifest.get("config_hash") == config_hash(spec):
        log.info("sense dictionary in %s is up to date", out)
        return SenseDictionary.load(out)
    texts = corpus_texts(cfg.corpus_paths, cfg.sense_max_texts)
    chunk_dir = out / CHUNK_DIR
    computed = collect_occurrences(
        teacher,
        tokenizer,
        texts,
        chunk_dir,
        chunk_spec(cfg, teacher_name),
        cfg.sense_chunk_texts,
        cfg.sense_max_occurrences,
        cfg.cutoff_len,
        cfg.sense_batch_size,
        device,
    )
    words, word_of, vectors = load_occurrences(chunk_dir)
    senses = cluster_senses(
        words, word_of, vectors, cfg.sense_k, cfg.sense_min_per_cluster, cfg.sense_kmeans_n_init, cfg.seed
    )
    senses.save(out)
    write_manifest(
        out,
        "dskd-senses",
        spec,
        texts=len(texts),
        chunks_computed=computed,
        occurrences=int(len(word_of)),
        words=len(senses),
        senses=int(senses.vectors.shape[0]),
    )
    log.info(
        "sense dictionary: %d words, %d senses from %d texts -> %s",
        len(senses),
        senses.vectors.shape[0],
        len(texts),
        out,
    )
    return senses
