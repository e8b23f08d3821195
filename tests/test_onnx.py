"""The served model on ONNX Runtime: torch's vectors, an export that checks itself and is made again when
damaged or missing, a clear stop when it cannot be made, and int8 as a model of its own."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from index import Embedder, IndexSettings, TorchEmbedder, packaged_embedder
from index.errors import ConfigError, RagError
from index.onnx import MANIFEST, OnnxEmbedder, ensure_export
from index.store import IndexStore
from tests.conftest import SEEDS
from tests.servers import free_port, rag, rag_env

QUESTIONS = [
    "Why did Russian peacekeepers leave Karabakh?",
    "Who won?",
    "On January 1, a law went into effect that legalizes recreational marijuana in which state?",
]
PASSAGES = [
    "The city council voted 7 to 2 on Tuesday to build protected cycling lanes on Harbour Road.",
    "Rain.",
    # Far past the model's 256 word pieces: both backends must truncate it at the same place.
    " ".join(f"Sentence {i} of a very long article about the withdrawal from Karabakh." for i in range(120)),
]


@pytest.fixture(scope="module")
def torch_embedder() -> TorchEmbedder:
    return TorchEmbedder(threads=1)


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.asarray((a * b).sum(axis=1))


def test_the_served_backend_gives_torchs_vectors(embedder: Embedder, torch_embedder: TorchEmbedder) -> None:
    assert isinstance(embedder, OnnxEmbedder)  # what `rag serve` and `rag ingest` use by default
    assert embedder.name == torch_embedder.name
    assert embedder.dimension == torch_embedder.dimension == 384
    texts = QUESTIONS + PASSAGES
    served = embedder.embed(texts)
    reference = torch_embedder.embed(texts)
    assert served.dtype == np.float32
    assert served.shape == (len(texts), 384)
    assert np.allclose(np.linalg.norm(served, axis=1), 1.0, atol=1e-5)
    assert _cosines(served, reference).min() > 0.9999
    # Batched by length, returned in the caller's order: each row is its own text's vector.
    alone = np.vstack([embedder.embed([text]) for text in texts])
    assert _cosines(served, alone).min() > 0.9999
    assert embedder.embed([]).shape == (0, 384)


def test_a_damaged_or_missing_export_is_made_again(tmp_path: Path) -> None:
    made = ensure_export("fp32", tmp_path)
    assert made.path.parent == tmp_path
    assert made.sha256[:16] in made.path.name
    manifest = json.loads((tmp_path / MANIFEST).read_text())
    assert manifest["fp32"]["sha256"] == made.sha256

    data = bytearray(made.path.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped byte in the weights
    made.path.write_bytes(bytes(data))
    again = OnnxEmbedder(folder=tmp_path)
    assert again.embed(QUESTIONS[:1]).shape == (1, 384)
    rebuilt = ensure_export("fp32", tmp_path)
    assert rebuilt.sha256 == made.sha256  # the same export as before the damage

    rebuilt.path.unlink()
    assert ensure_export("fp32", tmp_path).path.is_file()
    (tmp_path / MANIFEST).write_text("{not json")
    assert ensure_export("fp32", tmp_path).sha256 == made.sha256


def test_an_export_that_cannot_be_made_stops_start_up(tmp_path: Path, tiktoken_dir: Path) -> None:
    blocked = tmp_path / "not-a-folder"
    blocked.write_text("a file where the export's folder should be")
    with pytest.raises(ConfigError, match="ONNX export"):
        OnnxEmbedder(folder=blocked)
    env = rag_env(tmp_path / "data", tiktoken_dir) | {"RAG_MODEL_CACHE": str(blocked)}
    ingest = rag("ingest", "--quiet", str(SEEDS), env=env)
    assert ingest.returncode == 2
    assert "ONNX export" in ingest.stderr
    assert "Traceback" not in ingest.stderr
    serve = rag("serve", "--port", str(free_port()), env=env, timeout=120)
    assert serve.returncode == 2
    assert "ONNX export" in serve.stderr
    assert "Traceback" not in serve.stderr

    unknown = rag(
        "ingest", "--quiet", str(SEEDS), env=rag_env(tmp_path / "d2", tiktoken_dir) | {"RAG_EMBEDDER": "gpu"}
    )
    assert unknown.returncode == 2
    assert "unknown embedder 'gpu'" in unknown.stderr


def test_int8_is_a_model_of_its_own(embedder: Embedder, tmp_path: Path) -> None:
    int8 = packaged_embedder(IndexSettings(embedder="onnx-int8"))
    assert int8.name == f"{embedder.name}-int8"
    cosines = _cosines(int8.embed(QUESTIONS + PASSAGES), embedder.embed(QUESTIONS + PASSAGES))
    assert cosines.min() > 0.97  # close, not the same: an index of fp32 vectors must not take it
    IndexStore(tmp_path / "index", embedder.name, embedder.dimension).close()
    with pytest.raises(RagError, match="int8"):
        IndexStore(tmp_path / "index", int8.name, int8.dimension)


def test_rag_model_export_checks_the_export(tmp_path: Path, tiktoken_dir: Path) -> None:
    env = rag_env(tmp_path / "data", tiktoken_dir) | {"RAG_MODEL_CACHE": str(tmp_path / "models")}
    first = rag("model", "export", env=env, timeout=300)
    assert first.returncode == 0, first.stderr
    assert "fp32:" in first.stdout
    assert "checked" in first.stdout
    second = rag("model", "export", env=env)
    assert second.returncode == 0
    assert "exporting" not in second.stderr  # checked, not made again
