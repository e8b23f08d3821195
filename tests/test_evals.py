"""The evaluation harness: metric definitions on small hand-checked cases, the `rag eval` command on the
seed set, and a gate that fails when retrieval is degraded."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from collections.abc import Mapping, Sequence
from datetime import date
from pathlib import Path

import pytest

from evals.data import DatasetError, EvalQuestion, load_dialogues, load_questions
from evals.harness import (
    Outcome,
    answer_metrics,
    mean_scores,
    normalize_answer,
    retrieval_scores,
    significance,
)
from tests.conftest import ROOT

SEED_SET = ROOT / "evals" / "datasets" / "seed"
ARTICLES_SET = ROOT / "evals" / "datasets" / "realtimeqa-articles"


def _q(qid: str, gold: tuple[str, ...] = ("d1",), answers: tuple[str, ...] = ("Europe",)) -> EvalQuestion:
    return EvalQuestion(qid, "q?", date(2024, 1, 1), answers, (), gold, answerable=bool(gold))


def test_retrieval_metrics_match_hand_computed_values() -> None:
    questions = [_q("a"), _q("b"), _q("c", gold=("d1", "d2"))]
    rankings = {"a": ["d1", "x"], "b": ["x", "y", "d1"], "c": ["d2", "z"]}
    means = mean_scores(retrieval_scores(questions, rankings))
    assert means["hit@1"] == pytest.approx(2 / 3, abs=1e-4)
    assert means["hit@5"] == 1.0
    assert means["mrr@10"] == pytest.approx((1 + 1 / 3 + 1) / 3, abs=1e-4)
    assert means["recall@10"] == pytest.approx((1 + 1 + 0.5) / 3, abs=1e-4)


def test_a_question_with_nothing_retrieved_scores_zero() -> None:
    means = mean_scores(retrieval_scores([_q("a"), _q("b")], {"a": ["d1"], "b": []}))
    assert means["hit@10"] == 0.5


def test_answer_metrics() -> None:
    outcomes = [
        Outcome(_q("a"), ("d1",), "In Europe, phones. [1]", cited=("d1",), grounded=(True,), correct=True),
        Outcome(_q("b"), ("x",), "Elsewhere. [1] More. [2]", cited=("x", "d1"), grounded=(True, False)),
        Outcome(_q("c"), (), "none", abstained=True),
        Outcome(_q("n1", gold=(), answers=()), (), "none", abstained=True),
        Outcome(_q("n2", gold=(), answers=()), ("x",), "Wrong. [1]", cited=("x",), grounded=(True,)),
    ]
    metrics = answer_metrics(outcomes)
    assert metrics["answer_accuracy"] == pytest.approx(1 / 3, abs=1e-4)
    assert metrics["citation_precision"] == pytest.approx(2 / 3, abs=1e-4)
    assert metrics["citation_recall"] == pytest.approx(2 / 3, abs=1e-4)
    assert metrics["groundedness"] == pytest.approx(3 / 4, abs=1e-4)
    assert metrics["abstention_precision"] == 0.5
    assert metrics["abstention_recall"] == 0.5
    assert metrics["abstention_f1"] == 0.5


def test_answer_normalisation() -> None:
    assert normalize_answer("“Squid Game”") == "squid game"
    assert normalize_answer("The Côte d'Ivoire!") == "cote d ivoire"


def test_significance_of_identical_and_different_runs() -> None:
    questions = [_q(f"q{i}") for i in range(40)]
    good = {q.id: ["d1"] for q in questions}
    bad = {q.id: ["x", "d1"] for q in questions}
    same = significance(retrieval_scores(questions, good), retrieval_scores(questions, good))
    assert same["hit@1"]["p_value"] == 1.0
    assert not same["hit@1"]["significant"]
    differ = significance(retrieval_scores(questions, good), retrieval_scores(questions, bad))
    assert differ["hit@1"]["significant"]
    assert differ["hit@1"]["difference"] == 1.0


def test_malformed_question_files_name_the_line(tmp_path: Path) -> None:
    path = tmp_path / "q.jsonl"
    path.write_text('{"id": "1", "question": "ok?", "gold_ids": ["a"]}\n{"id": "2"}\n')
    with pytest.raises(DatasetError, match=r"q.jsonl:2: not a question record"):
        load_questions(path)
    path.write_text('{"id": "1", "question": "ok?", "gold_ids": []}\n')
    with pytest.raises(DatasetError, match="needs gold_ids"):
        load_questions(path)


def _rag_eval(
    *args: str, tmp_path: Path, env: Mapping[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    # A CI job's own summary file is not the tests': only a test that names one gets one.
    full = {k: v for k, v in os.environ.items() if k != "GITHUB_STEP_SUMMARY"}
    full.update({"RAG_DATA_DIR": str(tmp_path / "data"), **(env or {})})
    return subprocess.run(
        [sys.executable, "-m", "api", "eval", "--quiet", *args],
        env=full,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=900,
    )


@pytest.mark.slow
def test_rag_eval_on_the_seed_set_writes_every_report_file(tmp_path: Path) -> None:
    report = tmp_path / "report"
    result = _rag_eval(
        str(SEED_SET),
        "--json",
        "--baselines",
        "--report",
        str(report),
        "--min",
        "hit@1=0.9",
        tmp_path=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    metrics = json.loads(result.stdout)
    for key in (
        "hit@1",
        "hit@5",
        "hit@10",
        "mrr@10",
        "ndcg@10",
        "recall@10",
        "answer_accuracy",
        "citation_precision",
        "citation_recall",
        "groundedness",
        "abstention_precision",
        "abstention_recall",
        "abstention_f1",
    ):
        assert isinstance(metrics[key], float), key
    assert set(metrics["latency_ms"]) == {"embed", "retrieve", "compose", "total"}
    assert set(metrics["baselines"]) == {"bm25", "dense"}
    assert metrics["questions"] == 30
    assert metrics["groundedness"] == 1.0
    assert json.loads((report / "metrics.json").read_text())["hit@1"] == metrics["hit@1"]
    assert (report / "hit_at_k.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "| hit@1 |" in (report / "summary.md").read_text()
    assert (report / "failures.csv").read_text().startswith("id,question,asked_on")
    suite = ET.parse(report / "junit.xml").getroot().find("testsuite")
    assert suite is not None
    assert (suite.get("tests"), suite.get("failures")) == ("1", "0")


@pytest.mark.slow
def test_corpus_and_question_files_with_limit(tmp_path: Path) -> None:
    result = _rag_eval(
        "--corpus",
        str(SEED_SET / "corpus.jsonl"),
        "--questions",
        str(SEED_SET / "questions.jsonl"),
        "--limit",
        "5",
        "--json",
        tmp_path=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["questions"] == 5


@pytest.mark.slow
def test_the_gate_fails_when_retrieval_is_degraded(tmp_path: Path) -> None:
    """A gate on the articles set passes with the served retriever and fails when retrieval falls back to
    the plain dense stage of the first version: on the absolute floors, and against the saved run of the
    served retriever, with the questions it lost listed."""
    gate = ["--min", "hit@1=0.88", "--min", "hit@5=0.9"]
    saved = tmp_path / "runs" / "articles.json"
    healthy = _rag_eval(str(ARTICLES_SET), *gate, "--save-run", str(saved), tmp_path=tmp_path)
    assert healthy.returncode == 0, healthy.stdout + healthy.stderr
    run = json.loads(saved.read_text())
    assert run["format"] == "newsrag-eval-run/1"
    assert run["dataset_hash"]
    assert run["index_hash"]
    assert run["code"]
    assert run["metrics"]["hit@1"] == 1.0
    first = next(iter(run["questions"].values()))
    assert {"question", "ranking", "answer", "abstained", "cited", "correct"} <= set(first)
    assert set(run["scores"]["hit@1"]) == {q for q, v in run["questions"].items() if v["answerable"]}
    assert run["scores"]["followup_story@3"]
    assert run["turns"]
    report = tmp_path / "degraded"
    summary = tmp_path / "compare.md"
    degraded = _rag_eval(
        str(ARTICLES_SET),
        *gate,
        "--stage",
        "dense",
        "--report",
        str(report),
        "--compare",
        str(saved),
        "--max-drop",
        "ndcg@10=0.5",
        "--summary",
        str(summary),
        tmp_path=tmp_path,
    )
    assert degraded.returncode == 1
    assert "gate failed: hit@1" in degraded.stderr
    assert "regression against" in degraded.stderr
    assert "hit@1 1.0 -> 0.8" in degraded.stderr
    assert "ndcg@10" not in degraded.stderr  # dropped, but less than it may
    suite = ET.parse(report / "junit.xml").getroot().find("testsuite")
    assert suite is not None
    assert suite.get("failures") in {"1", "2"}
    text = summary.read_text()
    assert "(**fails**)" in text
    assert "❌ regression" in text
    lost = [q for q, v in run["scores"]["hit@1"].items() if v == 1.0]
    worse = text.split("#### Worse", 1)[1].split("#### Better", 1)[0]
    rows = [line.split(" | ") for line in worse.splitlines() if line.startswith("| ")][1:]  # no header
    listed = [r[0].strip("| ") for r in rows if any(c.startswith("hit@1 1→0") for c in r[2].split(", "))]
    assert len(listed) >= 10
    assert set(listed) <= set(lost)
    question = run["questions"][listed[0]]["question"]
    assert question.split()[0] in worse


@pytest.mark.slow
def test_a_saved_run_compared_with_itself_passes_and_another_dataset_is_refused(tmp_path: Path) -> None:
    saved = tmp_path / "seed.json"
    assert _rag_eval(str(SEED_SET), "--save-run", str(saved), tmp_path=tmp_path).returncode == 0
    summary = tmp_path / "job-summary.md"
    env_summary = tmp_path / "github-step-summary.md"
    env_summary.write_text("earlier step\n")
    again = _rag_eval(
        str(SEED_SET),
        "--compare",
        str(saved),
        "--summary",
        str(summary),
        tmp_path=tmp_path,
        env={"GITHUB_STEP_SUMMARY": str(env_summary)},
    )
    assert again.returncode == 0, again.stdout + again.stderr
    text = summary.read_text()
    assert "passes" in text
    assert "0 questions moved" in text
    assert "| hit@1 | 1.0000 | 1.0000 | +0.0000 | 1.000 |" in text
    assert env_summary.read_text() == "earlier step\n" + text + "\n"
    other = _rag_eval(str(SEED_SET), "--limit", "10", "--compare", str(saved), tmp_path=tmp_path)
    assert other.returncode == 2
    assert "another dataset" in other.stderr
    assert "Traceback" not in other.stderr
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    refused = _rag_eval(str(SEED_SET), "--compare", str(broken), tmp_path=tmp_path)
    assert refused.returncode == 2
    assert "not a saved run" in refused.stderr


def test_unknown_gate_metric_is_refused(tmp_path: Path) -> None:
    result = _rag_eval(str(SEED_SET), "--min", "speed=3", tmp_path=tmp_path)
    assert result.returncode != 0
    assert "--min takes METRIC=VALUE" in result.stderr


def test_malformed_dialogue_files_name_the_line(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl"
    first = {"question": "What did the council approve?", "answers": ["a bridge"], "gold_ids": ["a"]}
    good = {"id": "1", "asked_on": "2024-12-01", "turns": [first, {**first, "kind": "follow-up"}]}
    path.write_text(json.dumps(good) + "\n" + json.dumps({"id": "2", "turns": [first]}) + "\n")
    with pytest.raises(DatasetError, match=r"d.jsonl:2: a dialogue needs a first turn and later turns"):
        load_dialogues(path)
    path.write_text(json.dumps({**good, "turns": [first, {**first, "kind": "sideways"}]}) + "\n")
    with pytest.raises(DatasetError, match=r"d.jsonl:1: a dialogue needs"):
        load_dialogues(path)
    path.write_text(json.dumps({**good, "turns": [first, {"question": "When?", "kind": "follow-up"}]}) + "\n")
    with pytest.raises(DatasetError, match=r"d.jsonl:1: not a dialogue record"):
        load_dialogues(path)
    path.write_text("\n")
    with pytest.raises(DatasetError, match="no dialogues"):
        load_dialogues(path)
    with pytest.raises(DatasetError, match="dialogue file not found"):
        load_dialogues(tmp_path / "missing.jsonl")
    assert load_dialogues(_write(path, [good]))[0].turns[1].kind == "follow-up"


def _write(path: Path, rows: Sequence[Mapping[str, object]]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


@pytest.mark.slow
def test_rag_eval_scores_dialogues_with_and_without_history_and_gates_on_them(tmp_path: Path) -> None:
    corpus = ROOT / "tests" / "data" / "conversation.jsonl"
    bridge = ["c-bridge-approved"]
    first = {
        "question": "What did the Riverton council approve?",
        "answers": ["Harbor Bridge"],
        "gold_ids": bridge,
    }
    dialogues = [
        {
            "id": "bridge",
            "asked_on": "2024-12-01",
            "turns": [
                first,
                {
                    "question": "When will it be completed?",
                    "answers": ["2027"],
                    "gold_ids": bridge,
                    "kind": "follow-up",
                },
                {
                    "question": "How much will it cost?",
                    "answers": ["$48 million"],
                    "gold_ids": bridge,
                    "kind": "follow-up",
                },
            ],
        },
        {
            "id": "stadium",
            "asked_on": "2024-12-01",
            "turns": [
                first,
                {
                    "question": "When will the Oakdale stadium be completed?",
                    "answers": ["2025"],
                    "gold_ids": ["c-stadium"],
                    "kind": "new-subject",
                },
            ],
        },
    ]
    questions = _write(tmp_path / "questions.jsonl", [{"id": "q1", "asked_on": "2024-12-01", **first}])
    files = ["--corpus", str(corpus), "--questions", str(questions)]
    files += ["--dialogues", str(_write(tmp_path / "dialogues.jsonl", dialogues))]
    report = tmp_path / "report"
    gate = ["--min", "followup_story@3=0.99", "--min", "new_subject_story@3=0.99"]
    result = _rag_eval(*files, "--json", "--report", str(report), *gate, tmp_path=tmp_path)
    assert result.returncode == 0, result.stderr
    metrics = json.loads(result.stdout)
    follow_ups = metrics["dialogues"]["follow-up"]
    assert follow_ups["turns"] == 2
    assert follow_ups["leaned"] == 1.0
    assert follow_ups["history"]["story@3"] == 1.0
    assert follow_ups["alone"]["story@3"] == 0.5  # alone, "How much will it cost?" quotes the ferry fare
    changed = metrics["dialogues"]["new-subject"]
    assert changed["leaned"] == 0.0
    assert changed["history"] == changed["alone"]
    assert metrics["followup_story@3_alone"] == 0.5
    assert "| follow-up | 2 |" in (report / "summary.md").read_text()
    failing = _rag_eval(*files, "--min", "followup_story@3_alone=0.9", tmp_path=tmp_path)
    assert failing.returncode == 1
    assert "gate failed: followup_story@3_alone = 0.5 < 0.9" in failing.stderr


FEED = ROOT / "tests" / "data" / "feed.xml"
FEED_QUESTIONS = ROOT / "tests" / "data" / "feed-questions.jsonl"


@pytest.mark.slow
def test_a_saved_feed_is_a_corpus_the_gate_can_run(tmp_path: Path) -> None:
    """A feed file's entries, as the poller would store them without their pages, scored against
    questions that name their gold entries by link; saved and compared like any dataset."""
    saved = tmp_path / "feed-run.json"
    args = ["--feed", str(FEED), "--questions", str(FEED_QUESTIONS)]
    result = _rag_eval(*args, "--json", "--min", "hit@1=1.0", "--save-run", str(saved), tmp_path=tmp_path)
    assert result.returncode == 0, result.stderr
    metrics = json.loads(result.stdout)
    assert (metrics["dataset"], metrics["questions"]) == ("feed", 3)
    assert metrics["answer_accuracy"] == 1.0
    run = json.loads(saved.read_text())
    cited = run["questions"]["feed-1"]["cited"][0]
    assert cited.startswith("feed-")  # the poller's id for the entry's canonical link
    again = _rag_eval(*args, "--compare", str(saved), tmp_path=tmp_path)
    assert again.returncode == 0, again.stderr
    wrong = tmp_path / "wrong.jsonl"
    wrong.write_text(
        json.dumps(
            {"id": "x", "question": "q?", "answers": ["a"], "gold_ids": ["https://elsewhere.example/a"]}
        )
        + "\n"
    )
    refused = _rag_eval("--feed", str(FEED), "--questions", str(wrong), tmp_path=tmp_path)
    assert refused.returncode == 2
    assert "is no entry of the feed" in refused.stderr
