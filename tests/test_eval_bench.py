"""bench/eval_batch.py: on tiny settings it prints one JSON line with its ratio, and both sides answer alike."""

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_eval_batch_benchmark_prints_its_ratio_and_equal_answers(tmp_path):
    args = ["--json", "--no-save", "--out", str(tmp_path), "--minutes", "0.1", "0.15", "--questions", "2",
            "--methods", "tempo,uniform", "--budgets", "16", "32", "--max-frames", "4", "--repeats", "1"]  # fmt: skip
    env = os.environ | {"HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    done = subprocess.run(
        [sys.executable, "bench/eval_batch.py", *args],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
        env=env,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    (line,) = [json.loads(x) for x in done.stdout.strip().splitlines()]
    assert line["benchmark"] == "eval_batch" and {"cpu", "torch", "torch_threads"} <= set(line["machine"])
    assert 0 < line["per_question_ratio"] < 1.5 and {"goal", "goal_met"} <= set(line)
    assert line["same_answers"] is True and line["errors"] == []
    assert line["questions"] == 4 and line["settings"]["budgets"] == [16, 32]
