"""Training the reader fits the machine (issue 41): a run that stops and goes on from its checkpoint ends
with the weights an unbroken run does, and says where it goes on from."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT

CONTEXT = " ".join(
    f"Sentence {i} says the ferry to the island number {i} leaves at {6 + i % 12} in the morning."
    for i in range(12)
)


def _qa_data(folder: Path) -> Path:
    """A few made-up records in the QA data's layout (../shared/data/qa is what `make train-reader`
    reads)."""
    folder.mkdir()
    for name in ("squad.jsonl", "fairytaleqa.jsonl", "selqa.jsonl"):
        with (folder / name).open("w") as handle:
            for i in range(12):
                answer = f"{6 + i % 12} in the morning"
                question = f"When does the ferry to island {i} leave?"
                record = {"id": f"{name}-{i}", "source": name.split(".")[0], "question": question}
                at = CONTEXT.index(f"island number {i} leaves at {answer}") + len(
                    f"island number {i} leaves at "
                )
                fields = {"context": CONTEXT, "answers": [answer], "answer_starts": [at], "answerable": True}
                handle.write(json.dumps(record | fields) + "\n")
    return folder


def _train(qa: Path, out: Path, *args: str) -> subprocess.CompletedProcess[str]:
    command = [
        *(sys.executable, "-m", "evals.fit.reader", "--qa-data", str(qa), "--news-qa", "none"),
        *("--out", str(out), "--max-steps", "4", "--batch-size", "4", "--checkpoint-every", "1"),
        *args,
    ]
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600, check=False)


@pytest.mark.slow
def test_a_stopped_run_goes_on_to_the_weights_of_an_unbroken_one(tmp_path: Path) -> None:
    import torch

    qa = _qa_data(tmp_path / "qa")
    whole = _train(qa, tmp_path / "whole")
    assert whole.returncode == 0, whole.stderr[-2000:]
    stopped = _train(qa, tmp_path / "broken", "--stop-after", "2")
    assert stopped.returncode == 0, stopped.stderr[-2000:]
    assert json.loads(stopped.stdout)["stopped_at"] == 2
    assert not (tmp_path / "broken" / "reader.pt").exists()
    resumed = _train(qa, tmp_path / "broken")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "going on from step 2 of 4" in resumed.stderr
    assert json.loads(resumed.stdout)["steps"] == 4
    a = torch.load(tmp_path / "whole" / "reader.pt", weights_only=True)
    b = torch.load(tmp_path / "broken" / "reader.pt", weights_only=True)
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    losses = json.loads((tmp_path / "broken" / "loss.json").read_text())["losses"]
    assert [s for s, _ in losses] == [0, 1, 2, 3]  # the curve carries on across the stop
