"""The benchmarks: each --json path runs on tiny settings and prints one valid JSON line with its ratio keys;
the FLOP estimator matches hand-worked numbers; the hand-written real-size config has the published size."""

import importlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "bench"


def bench_module(name: str, monkeypatch):
    """Import bench/<name>.py the way ``python bench/<name>.py`` does (bench/ first on the path)."""
    monkeypatch.syspath_prepend(str(BENCH))
    return importlib.import_module(name)


def run_json(script: str, *args: str, timeout: float = 120) -> dict:
    """Run a benchmark with --json --no-save; it must print exactly one line, a JSON object."""
    env = os.environ | {"HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    done = subprocess.run(
        [sys.executable, str(BENCH / script), "--json", "--no-save", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
        env=env,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.strip().splitlines()
    assert len(lines) == 1, done.stdout[-3000:]
    line = json.loads(lines[0])
    assert {"benchmark", "date", "commit", "machine"} <= set(line)
    assert {"cpu", "cores", "torch", "transformers", "device", "torch_threads"} <= set(line["machine"])
    return line


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    from tests.videos import make_clip

    return make_clip(tmp_path_factory.mktemp("bench") / "clip.mp4", seconds=12, fps=8, size=(160, 96))


# --- the FLOP estimator -------------------------------------------------------------------------------------


def test_flops_follow_the_stated_formula_on_a_hand_worked_config(monkeypatch):
    flops = bench_module("flops", monkeypatch)
    cfg = flops.DecoderConfig(
        "toy", layers=1, hidden=4, intermediate=8, heads=2, kv_heads=1, head_dim=2, vocab=10
    )
    # n = 3: q,o 2*3*4*4 each = 192; k,v 2*3*4*2 each = 96; MLP 2*3*3*4*8 = 576; attention 4*4*(3*4/2) = 96;
    # LM head on the last position 2*4*10 = 80.
    assert flops.layer_flops(cfg, 3) == 192 + 96 + 576 + 96
    assert flops.prefill_flops(cfg, 3) == 960 + 80
    # one decode step after 3 cached tokens attends to 4 keys
    assert flops.layer_flops(cfg, 1, past=3) == (2 * 4 * 12 * 1) + 2 * 3 * 4 * 8 + 4 * 4 * 4
    assert flops.kv_cache_bytes(cfg, 3) == 3 * 2 * 1 * 2 * 2


def test_per_layer_lengths_count_each_layer_at_its_own_length(monkeypatch):
    flops = bench_module("flops", monkeypatch)
    cfg = flops.QWEN3VL_2B
    uniform = flops.prefill_flops(cfg, 1000)
    assert flops.prefill_flops(cfg, [1000] * cfg.layers) == uniform
    assert flops.prefill_flops(cfg, [1000] * 14 + [500] * 14) < uniform
    with pytest.raises(ValueError, match="28 layers"):
        flops.prefill_flops(cfg, [1000] * 3)


def test_xcomp_cross_check_matches_the_papers_ratio(monkeypatch):
    """448 → 187 TFLOPs (0.417) in the paper; our count of the same setting gives the same ratio within 2%."""
    flops = bench_module("flops", monkeypatch)
    from compressors.xcomp import layer_counts

    cfg = flops.QWEN25_1_5B
    base = flops.prefill_flops(cfg, 4096 * 16)
    lp = flops.prefill_flops(cfg, [4096 * n for n in layer_counts(cfg.layers, 16)])
    assert lp / base == pytest.approx(187 / 448, rel=0.02)


def test_hand_written_real_size_config_has_qwen3vl_2b_size(monkeypatch):
    gpu = bench_module("gpu", monkeypatch)
    model, _ = gpu.real_size_model(torch.device("meta"), torch.bfloat16)
    params = sum(p.numel() for p in model.parameters())
    assert 2.0e9 < params < 2.25e9  # the model card's 2B (2.13B with tied embeddings)
    text = model.config.text_config
    assert (text.num_hidden_layers, text.hidden_size, text.num_key_value_heads) == (28, 2048, 8)
    assert model.config.vision_config.deepstack_visual_indexes == [5, 11, 17]
    assert model.lm_head.weight is model.model.language_model.embed_tokens.weight


def test_gpu_synthetic_frames_go_past_256_frames(monkeypatch):
    gpu = bench_module("gpu", monkeypatch)
    frames = gpu.synthetic_frames(300, size=(4, 6))
    assert frames.shape == (300, 4, 6, 3) and frames.dtype == np.uint8
    assert (frames[256, ..., 0] == frames[0, ..., 0]).all() and not (frames[1] == frames[0]).all()


# --- each benchmark's --json path ---------------------------------------------------------------------------

SMALL = ("--max-frames", "8", "--max-new-tokens", "2", "--repeats", "1", "--budget", "16")


def test_compare_benchmark_prints_its_ratio(clip):
    line = run_json("compare.py", "--video", str(clip), *SMALL)
    assert line["benchmark"] == "compare"
    assert 0 < line["shared_vs_separate_ratio"] < 1.5
    assert line["same_answers"] is True and line["errors"] == {}
    assert set(line["separate_s"]) == {"espresso", "xcomp", "tempo", "uniform", "pool"}
    assert {"goal", "goal_met"} <= set(line)


def test_followup_benchmark_prints_its_ratio(clip):
    line = run_json("followup.py", "--video", str(clip), *SMALL)
    assert 0 < line["followup_vs_first_ratio"] < 1.5
    assert line["followup_equals_cold"] is True
    assert line["cache_hits_after_followup"]["tokens"] >= 1
    assert line["relevance_hits_on_rebudget"] >= 1


@pytest.mark.slow
def test_scaling_benchmark_prints_growth_and_budget_checks(tmp_path):
    line = run_json(
        "scaling.py", "--minutes", "0.5", "1.5", "--fps", "1", "--budget", "48", "--new-tokens", "2",
        "--out", str(tmp_path),
    )  # fmt: skip
    assert line["uncompressed_grows"] is True and line["methods_within_budget"] is True
    assert line["methods_within_real_budget"] is True
    assert set(line["method_vs_uncompressed_at_longest"]) == {"espresso", "xcomp", "tempo", "uniform", "pool"}
    assert Path(line["plot"]).exists() and Path(line["plot"]).suffix == ".png"
    video = line["videos"][-1]
    assert video["methods"]["uncompressed"]["tokens_into_llm"] == video["raw_tokens"] > 48


def test_gpu_benchmark_without_cuda_says_it_was_skipped():
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA: the skip path does not apply")
    line = run_json("gpu.py")
    assert line["skipped"] is True and "CUDA" in line["reason"]
    assert line["claims"]["xcomp"]["baseline_tflops"] == 448


def test_gpu_benchmark_code_path_runs_tiny_on_cpu():
    line = run_json(
        "gpu.py", "--tiny", "--device", "cpu", "--frames", "8", "16", "--budget", "24", "--new-tokens", "3"
    )
    assert line["skipped"] is False and [r["frames"] for r in line["results"]] == [8, 16]
    for result in line["results"]:
        ref = result["methods"]["uncompressed"]
        assert ref["tokens_into_llm"] == result["raw_tokens"]
        for method, row in result["methods"].items():
            assert "error" not in row, method
            assert row["new_tokens"] == 3, "EOS is ignored: every answer decodes --new-tokens"
            if method != "uncompressed":
                assert row["tokens_into_llm"] <= 24, method
    claims = line["claims"]
    assert claims["espresso"]["paper"]["throughput_vs_pooling"] == 2.1
    assert set(claims["espresso"]["ours_training_free"]) == {"8", "16"}
    assert claims["xcomp"]["ours_estimated_4096_frames"]["Qwen3-VL-2B"]["ratio"] < 0.5


def test_realsize_benchmark_drives_the_pipeline_and_prints_floors(clip):
    line = run_json(
        "realsize.py", "--tiny", "--video", str(clip), "--frames", "8", "--budget", "32", "--new-tokens", "2"
    )  # fmt: skip
    methods = {"espresso", "xcomp", "tempo", "uniform", "pool"}
    assert line["frames"] == 8 and line["errors"] == {} and line["same_answers_alone"] is True
    assert set(line["runs"]) == {"first", "followup", "uncompressed"} | methods
    follow, shared = line["followup_vs_first"], line["shared_vs_separate"]
    for entry in (follow, shared):
        assert {"ratio", "floor", "goal_met", "floor_goal_met"} <= set(entry) and entry["floor"] > 0
    # the follow-up's floor is made of its own stages, so it can never exceed its wall time
    assert 0 < follow["floor_seconds"] <= follow["seconds"]
    assert line["uncompressed_prefill"]["tokens"] == line["raw_tokens"] > 32
    assert all(p["tokens"] <= 32 for p in line["prefill_vs_uncompressed"].values())
    first = line["runs"]["first"]["stages"]
    assert {"probe", "decode", "encode", "total"} <= set(first["shared"])
    assert all(m["new_tokens"] == 2 and m["prefill"] > 0 for m in first["methods"].values())
    # the follow-up runs on the first question's caches: what its floor assumes it may skip
    reused = line["runs"]["followup"]["stages"]["methods"]
    assert "compression" in reused["espresso"]["reused"]
    assert any("scoring prompt prefix" in r for r in reused["tempo"]["reused"])
