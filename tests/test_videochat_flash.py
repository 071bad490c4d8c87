"""VideoChat-Flash-2B and the official XComp on tiny random checkpoints written under the authors' key names.

The checkpoint is assembled here, independently of the module under test: the LLM's names from transformers'
stock ``Qwen2ForCausalLM`` (the class the authors' ``Qwen2Model_Flash`` copies), the vision tower's and the
projector's spelled out from the authors' module attribute paths (``VideoChatFlashQwenForCausalLM.model
.vision_tower.vision_tower.encoder...``, ``.model.mm_projector.mlp...``), beside a ``config.json`` shaped like
the Hub's (``videochat_flash_qwen``) and a ``generation_config.json`` with its repetition penalty.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from transformers import Qwen2Config, Qwen2ForCausalLM

from compressors.xcomp import layer_counts, lp_schedule, qc_layers
from model_zoo import ModelLoadError, umt
from model_zoo import videochat_flash as vcf
from model_zoo import videochat_flash_frames as plan
from model_zoo import videochat_flash_llm as llm_ops
from model_zoo.engine_layers import cache_lengths
from model_zoo.tiny import build_tokenizer
from model_zoo.umt import UMTConfig

TINY_UMT = UMTConfig(image_size=144, patch_size=16, width=32, depth=3, heads=4, mlp_ratio=2.0)
V = "model.vision_tower.vision_tower.encoder."
LAYERS = 12  # the smallest depths where the cosine schedule keeps N(0) == N(1) start at 9


# ---------------------------------------------------------------------------------------------- writers


def hub_config(tokenizer, *, tied: bool = True) -> dict:
    """A config.json as the Hub model's (key names and kinds), with tiny sizes."""
    return {
        "architectures": ["VideoChatFlashQwenForCausalLM"],
        "model_type": "videochat_flash_qwen",
        "vocab_size": len(tokenizer),
        "hidden_size": 48,
        "intermediate_size": 96,
        "num_hidden_layers": LAYERS,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "hidden_act": "silu",
        "max_position_embeddings": 65536,
        "rms_norm_eps": 1e-6,
        "rope_theta": 1000000.0,
        "rope_scaling": None,
        "tie_word_embeddings": tied,
        "initializer_range": 0.3,
        "bos_token_id": tokenizer.pad_token_id,
        "eos_token_id": tokenizer.convert_tokens_to_ids("<|im_end|>"),
        "use_sliding_window": False,
        "sliding_window": 65536,
        "mm_vision_tower": "umt-hd-large",
        "mm_projector_type": "tome16_mlp_hd64",
        "mm_hidden_size": TINY_UMT.width,
        "mm_local_num_frames": 4,
        "mm_vision_select_layer": -2,
        "mm_patch_merge_type": "spatial_nopad",
        "mm_newline_position": "nothing",
        "torch_dtype": "float32",
    }


def vision_names(config: UMTConfig) -> dict[str, tuple[int, ...]]:
    """The tower's and projector's tensors: names from the authors' attribute paths, shapes from UMT's sizes."""
    e, p, hidden = config.width, config.patch_size, int(config.width * config.mlp_ratio)
    names = {V + "patch_embed.proj.weight": (e, 3, 1, p, p), V + "patch_embed.proj.bias": (e,)}
    for i in range(config.depth + config.select_layer + 1):
        b = f"{V}blocks.{i}."
        names |= {
            b + "norm1.weight": (e,),
            b + "norm1.bias": (e,),
            b + "norm2.weight": (e,),
            b + "norm2.bias": (e,),
        }
        names |= {b + "attn.qkv.weight": (3 * e, e), b + "attn.q_bias": (e,), b + "attn.v_bias": (e,)}
        names |= {b + "attn.proj.weight": (e, e), b + "attn.proj.bias": (e,)}
        names |= {b + "mlp.fc1.weight": (hidden, e), b + "mlp.fc1.bias": (hidden,)}
        names |= {b + "mlp.fc2.weight": (e, hidden), b + "mlp.fc2.bias": (e,)}
    return names | {V + "vision_layernorm.weight": (e,), V + "vision_layernorm.bias": (e,)}


def official_state(config: dict, seed: int) -> dict[str, torch.Tensor]:
    """Random tensors under the official names (LLM from stock Qwen2, tower and projector spelled out)."""
    generator = torch.Generator().manual_seed(seed)
    text = {
        k: v for k, v in config.items() if not k.startswith(("mm_", "architectures", "model_type", "rope_s"))
    }
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        llm = Qwen2ForCausalLM(Qwen2Config(**text))
    state = {k: v.clone() for k, v in llm.state_dict().items()}
    if config["tie_word_embeddings"]:
        del state["lm_head.weight"]  # a tied head is not saved
    d, e = config["hidden_size"], config["mm_hidden_size"]
    shapes = vision_names(TINY_UMT) | {
        "model.mm_projector.mlp.0.weight": (d, e),
        "model.mm_projector.mlp.0.bias": (d,),
        "model.mm_projector.mlp.2.weight": (d, d),
        "model.mm_projector.mlp.2.bias": (d,),
    }
    for name, shape in shapes.items():
        scale = 1.0 if name.endswith("norm1.weight") or "layernorm.weight" in name else 0.2
        state[name] = torch.randn(shape, generator=generator) * scale
    return state


def write_checkpoint(directory: Path, *, seed: int = 0, tied: bool = True, fmt: str = "safetensors") -> Path:
    """A tiny VideoChat-Flash directory: config, generation config, tokenizer, weights."""
    directory.mkdir(parents=True, exist_ok=True)
    tokenizer = build_tokenizer()
    tokenizer.save_pretrained(directory)
    config = hub_config(tokenizer, tied=tied)
    (directory / "config.json").write_text(json.dumps(config))
    eos = [tokenizer.convert_tokens_to_ids("<|im_end|>"), tokenizer.pad_token_id]
    generation = {"do_sample": True, "eos_token_id": eos, "repetition_penalty": 1.1, "temperature": 0.7}
    (directory / "generation_config.json").write_text(json.dumps(generation))
    write_weights(directory, official_state(config, seed), fmt)
    return directory


def write_weights(directory: Path, state: dict[str, torch.Tensor], fmt: str) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    if fmt == "safetensors":
        save_file({k: v.contiguous() for k, v in state.items()}, str(directory / "model.safetensors"))
    else:
        torch.save(state, directory / "pytorch_model.bin")


def frames_of(count: int, seed: int = 0, size: int = 40) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (count, size, size + 8, 3), dtype=np.uint8)


QUESTION = "What happens in the video?"


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tiny matrices: one thread is faster


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    return write_checkpoint(tmp_path_factory.mktemp("vcf") / "ckpt")


@pytest.fixture(scope="module")
def model(checkpoint):
    return vcf.load_videochat_flash(checkpoint, device="cpu", vision=TINY_UMT)


def answered(run) -> list[int]:
    """The token ids of the whole answer (reading ``text`` runs the generation to its end)."""
    assert isinstance(run.text, str)
    return list(run.stream.token_ids)


def xcomp_options(**changes) -> vcf.XCompOptions:
    """The authors' settings scaled to the tiny model: schedule and band from ``compressors.xcomp``."""
    authors = {"lp_schedule": tuple(lp_schedule(LAYERS)), "qc_layers": tuple(qc_layers(LAYERS))}
    return vcf.XCompOptions(**(authors | changes))


@pytest.fixture(scope="module")
def xcomp_dirs(tmp_path_factory) -> tuple[Path, Path]:
    """(base, weights): the base model's directory and a directory holding only XComp's model.safetensors."""
    root = tmp_path_factory.mktemp("xcomp")
    base = write_checkpoint(root / "base", seed=0)
    weights = root / "weights"
    write_weights(weights, official_state(hub_config(build_tokenizer()), seed=1), "safetensors")
    return base, weights


def load_tiny_xcomp(xcomp_dirs, **options):
    base, weights = xcomp_dirs
    return vcf.load_xcomp(weights, base=base, options=xcomp_options(**options), device="cpu", vision=TINY_UMT)


# ------------------------------------------------------------------------------------------- end to end


def test_videochat_flash_loads_encodes_and_answers(model):
    run = model.run(frames_of(24), 24.0, QUESTION, budget=4096, max_new_tokens=6)
    text = run.text
    assert run.method == "videochat-flash" and run.kept_frames == list(range(24))
    assert run.llm_tokens == 24 * 16 and run.raw_tokens == 24 * TINY_UMT.patches
    assert run.layer_tokens == [24 * 16] * LAYERS == run.stream.layer_tokens  # no LP-Comp
    assert 0 < len(run.stream.token_ids) <= 6 and text == model.tokenizer.decode(run.stream.token_ids).strip()
    assert {"preprocess_s", "encode_s", "prefill_s", "decode_s"} <= set(run.timings) | set(run.stream.stats)


def test_budget_caps_the_frames_evenly_and_keeps_their_order(model):
    frames = frames_of(64)
    for budget in (128, 300, 512, 1024):
        run = model.run(frames, 64.0, QUESTION, budget=budget, max_new_tokens=1)
        assert run.llm_tokens <= budget and run.llm_tokens == len(run.kept_frames) * 16
        assert run.kept_frames == sorted(run.kept_frames) and set(run.kept_frames) <= set(run.frame_indices)
        assert len(run.kept_frames) == min(64, budget // 128 * 8)
    with pytest.raises(vcf.FlashRunError, match="below one 8-frame unit"):
        model.run(frames, 64.0, QUESTION, budget=100)


@pytest.mark.filterwarnings("ignore:Passing `repetition_penalty` with `inputs_embeds`")
def test_no_compression_equals_stock_generate_token_for_token(model):
    run = model.run(frames_of(16, seed=3), 16.0, QUESTION, budget=4096, max_new_tokens=12)
    ours = answered(run)
    assert model.penalty == 1.1  # read from generation_config.json
    stock = model.modules.llm.generate(
        inputs_embeds=run.stream.prompt.embeds[None],
        attention_mask=torch.ones(1, run.prompt_tokens, dtype=torch.long),
        do_sample=False,
        repetition_penalty=model.penalty,
        max_new_tokens=12,
        eos_token_id=list(model.eos_ids),
        pad_token_id=model.eos_ids[-1],
    )[0].tolist()
    assert len(ours) >= 4
    assert stock[: len(ours)] == ours
    assert len(ours) == 12 or stock[len(ours)] in model.eos_ids


@pytest.mark.filterwarnings("ignore:Passing `repetition_penalty` with `inputs_embeds`")
def test_repetition_penalty_decides_as_generate_does_when_it_matters(model):
    """With the layers' outputs zeroed the model repeats its last token under plain greedy decoding, so the
    penalty decides every step: ours must decide as ``generate`` does (generated tokens only)."""
    flat = copy.deepcopy(model)
    for layer in flat.modules.llm.model.layers:
        layer.self_attn.o_proj.weight.data.zero_()
        layer.mlp.down_proj.weight.data.zero_()

    def answer(penalty: float):
        flat.penalty = penalty
        run = flat.run(frames_of(8), 8.0, QUESTION, budget=4096, max_new_tokens=8)
        return run, answered(run)

    _, plain = answer(1.0)
    run, ours = answer(50.0)
    stock = flat.modules.llm.generate(
        inputs_embeds=run.stream.prompt.embeds[None],
        attention_mask=torch.ones(1, run.prompt_tokens, dtype=torch.long),
        do_sample=False,
        repetition_penalty=50.0,
        max_new_tokens=8,
        eos_token_id=list(flat.eos_ids),
        pad_token_id=flat.eos_ids[-1],
    )[0].tolist()
    assert len(plain) == 8 and len(set(plain)) == 1  # without the penalty: one token, repeated
    assert len(ours) == 8 and ours == stock[:8] and len(set(ours)) > 1


def test_prompt_puts_the_video_before_the_time_message_and_question(model):
    before, after, gen = model._texts(123.456, 512, QUESTION)
    decode = model.tokenizer.decode
    assert decode(before) == "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n"
    assert decode(after) == (
        f"\nThe video lasts for 123.46 seconds, and 512 frames are uniformly sampled from it. {QUESTION}<|im_end|>\n"
    )
    assert decode(gen) == "<|im_start|>assistant\n"


# ----------------------------------------------------------------------------------------------- loading


def test_bin_checkpoint_loads_with_weights_only_and_answers_like_safetensors(tmp_path, model):
    directory = write_checkpoint(tmp_path / "bin", fmt="bin")
    from_bin = vcf.load_videochat_flash(directory, device="cpu", vision=TINY_UMT)
    for name, tensor in model.modules.official_tensors().items():
        assert torch.equal(tensor, from_bin.modules.official_tensors()[name]), name
    frames = frames_of(16)
    a = model.run(frames, 16.0, QUESTION, budget=4096, max_new_tokens=4)
    b = from_bin.run(frames, 16.0, QUESTION, budget=4096, max_new_tokens=4)
    assert a.text == b.text and a.stream.token_ids == b.stream.token_ids


EXECUTED: list[str] = []


def _mark() -> None:
    EXECUTED.append("unpickled code ran")


class Hostile:
    def __reduce__(self):
        return (_mark, ())


def test_bin_with_pickled_code_is_refused_in_one_sentence(tmp_path):
    directory = write_checkpoint(tmp_path / "hostile", fmt="bin")
    state = torch.load(directory / "pytorch_model.bin", weights_only=True)
    torch.save({**state, "extra": Hostile()}, directory / "pytorch_model.bin")
    with pytest.raises(ModelLoadError, match="Cannot read the weight file") as info:
        vcf.load_videochat_flash(directory, device="cpu", vision=TINY_UMT)
    assert "\n" not in str(info.value) and EXECUTED == []


def test_renamed_key_is_refused_with_one_readable_sentence(tmp_path):
    directory = write_checkpoint(tmp_path / "renamed")
    from safetensors.torch import load_file

    state = load_file(directory / "model.safetensors")
    state["model.mm_projector.mlp.1.weight"] = state.pop("model.mm_projector.mlp.0.weight")
    write_weights(directory, state, "safetensors")
    with pytest.raises(vcf.VideoChatFlashLoadError) as info:
        vcf.load_videochat_flash(directory, device="cpu", vision=TINY_UMT)
    message = str(info.value)
    assert isinstance(info.value, ModelLoadError) and "\n" not in message
    assert "1 missing, 1 unexpected" in message and "nothing was loaded" in message
    assert "missing model.mm_projector.mlp.0.weight" in message
    assert "unexpected model.mm_projector.mlp.1.weight" in message


def test_missing_layers_are_grouped_and_shapes_are_checked(tmp_path):
    directory = write_checkpoint(tmp_path / "short")
    from safetensors.torch import load_file

    state = load_file(directory / "model.safetensors")
    dropped = {k: v for k, v in state.items() if not k.endswith(("attn.q_bias", "mlp.up_proj.weight"))}
    write_weights(directory, dropped, "safetensors")
    with pytest.raises(vcf.VideoChatFlashLoadError) as info:
        vcf.load_videochat_flash(directory, device="cpu", vision=TINY_UMT)
    grouped = f"missing model.layers.*.mlp.up_proj.weight ({LAYERS} keys); {V}blocks.*.attn.q_bias (2 keys)."
    assert grouped in str(info.value)
    state["model.norm.weight"] = torch.ones(7)
    write_weights(directory, state, "safetensors")
    with pytest.raises(vcf.VideoChatFlashLoadError, match=r"model\.norm\.weight \[7\] vs \[48\]"):
        vcf.load_videochat_flash(directory, device="cpu", vision=TINY_UMT)


def test_not_a_videochat_flash_directory_is_one_sentence(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "qwen2", "num_hidden_layers": 2}))
    with pytest.raises(vcf.VideoChatFlashLoadError, match="is not a VideoChat-Flash config") as info:
        vcf.load_videochat_flash(tmp_path, device="cpu")
    assert "\n" not in str(info.value)
    empty = write_checkpoint(tmp_path / "empty")
    (empty / "model.safetensors").unlink()
    with pytest.raises(vcf.VideoChatFlashLoadError, match="No model.safetensors or pytorch_model.bin"):
        vcf.load_videochat_flash(empty, device="cpu", vision=TINY_UMT)


def test_without_gpu_or_hub_loading_fails_in_one_sentence(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    for load in (vcf.load_videochat_flash, lambda: vcf.load_xcomp("someone/xcomp", options=xcomp_options())):
        with pytest.raises(ModelLoadError, match="need a CUDA GPU") as info:
            load()
        assert "\n" not in str(info.value)
    with pytest.raises(ModelLoadError, match="Cannot fetch the checkpoint OpenGVLab") as info:
        vcf.load_videochat_flash(device="cpu")  # HF_HUB_OFFLINE=1 and an empty cache in the tests
    assert "\n" not in str(info.value)


# ---------------------------------------------------------------------------------------------- projector


def reference_tome(x: np.ndarray, heads: int, target: int) -> np.ndarray:
    """ToMe as the authors describe it, one token at a time: even tokens (A) match their most similar odd token
    (B) by cosine of the head-averaged features; the best-matching A tokens merge into their partners by
    size-weighted mean; output = unmerged A by descending similarity, then B in order."""
    tokens, size = [row.astype(np.float64) for row in x], [1.0] * len(x)
    while len(tokens) > target:
        n = len(tokens)
        r = n // 2 if n - target > n // 2 else n - target
        metric = [t.reshape(heads, -1).mean(0) for t in tokens]
        metric = [m / np.linalg.norm(m) for m in metric]
        a_side, b_side = list(range(0, n, 2)), list(range(1, n, 2))
        best = {a: max(b_side, key=lambda b, a=a: metric[a] @ metric[b]) for a in a_side}
        ranked = sorted(a_side, key=lambda a: -(metric[a] @ metric[best[a]]))
        sums = {b: tokens[b] * size[b] for b in b_side}
        sizes = {b: size[b] for b in b_side}
        for a in ranked[:r]:
            sums[best[a]] = sums[best[a]] + tokens[a] * size[a]
            sizes[best[a]] += size[a]
        tokens = [tokens[a] for a in ranked[r:]] + [sums[b] / sizes[b] for b in b_side]
        size = [size[a] for a in ranked[r:]] + [sizes[b] for b in b_side]
    return np.stack(tokens)


def test_projector_tome_output_equals_a_direct_reference(model):
    projector = model.modules.projector
    x = torch.randn(2, 4 * TINY_UMT.patches, TINY_UMT.width, generator=torch.Generator().manual_seed(5))
    merged = projector.merge(x.double(), 64)
    assert merged.shape == (2, 64, TINY_UMT.width)
    assert umt.merge_steps(4 * TINY_UMT.patches, 64) == [
        162,
        81,
        17,
    ]  # 9 x 9 patches: the last step is partial
    for clip in range(2):
        expected = reference_tome(x[clip].numpy(), TINY_UMT.heads, 64)
        np.testing.assert_allclose(merged[clip].numpy(), expected, rtol=1e-10, atol=1e-12)
    state = {k: v.double() for k, v in projector.state_dict().items()}
    hidden = F.gelu(merged @ state["mlp.0.weight"].T + state["mlp.0.bias"])
    expected = hidden @ state["mlp.2.weight"].T + state["mlp.2.bias"]
    out = copy.deepcopy(projector).double()(x.double(), 4)
    torch.testing.assert_close(out, expected)
    assert umt.merge_steps(3136, 64) == [1568, 784, 392, 196, 98, 34]


def test_preprocessing_is_448_bicubic_with_imagenet_normalisation():
    frame = np.full((2, 30, 50, 3), (10, 128, 250), dtype=np.uint8)
    pixels = umt.preprocess_frames(frame, 448)
    assert pixels.shape == (2, 3, 448, 448) and pixels.dtype == torch.float32
    for c, value in enumerate((10, 128, 250)):
        expected = (np.float32(value / 255) - np.float32(umt.IMAGENET_MEAN[c])) / np.float32(
            umt.IMAGENET_STD[c]
        )
        assert torch.allclose(pixels[:, c], torch.tensor(expected), atol=1e-6)


def test_position_table_is_the_plain_sinusoid_at_the_pretraining_grid():
    base = umt.UMTConfig(image_size=224, width=64)  # 14 x 14 x 4 frames: nothing to interpolate
    table = umt.video_position_table(base)[0]
    angles = np.arange(784)[:, None] / np.power(10000, 2 * (np.arange(64) // 2) / 64)[None]
    assert torch.allclose(table[:, 0::2], torch.tensor(np.sin(angles[:, 0::2]), dtype=torch.float32))
    assert torch.allclose(table[:, 1::2], torch.tensor(np.cos(angles[:, 1::2]), dtype=torch.float32))
    assert umt.video_position_table(umt.UMTConfig(width=64)).shape == (1, 4 * 784, 64)
    assert umt.video_position_table(umt.UMTConfig(width=64, frames=8)).shape == (1, 8 * 784, 64)


# ----------------------------------------------------------------------------------------------- frames


def test_frame_counts_follow_the_authors_sampler():
    rule, xrule = plan.SamplingRule(), plan.XCOMP_SAMPLING
    assert plan.frame_count(100.0, 3000, rule) == 96  # 8 x floor(100 / 8)
    assert plan.frame_count(30.0, 3000, rule) == 64  # at least 64
    assert plan.frame_count(5000.0, 10**6, rule) == 512  # at most 512
    assert plan.frame_count(200.0, 6000, xrule) == 1024  # 8 fps, at most 1024
    assert plan.frame_count(200.0, 60, xrule) == 56  # fewer than the minimum exist: whole units of them
    assert plan.official_frame_indices(96.0, 96, rule) == list(range(96))  # decoded at the plan: identity
    assert plan.middle_indices(4, 100) == [12, 37, 62, 87]
    short = plan.official_frame_indices(20.0, 40, xrule)  # repeated up to 128 (XComp's load_video)
    assert len(short) == 128 and short == [int(i * 40 / 128) for i in range(128)]
    assert plan.frames_for_budget(4096) == 256 and plan.frames_for_budget(1000) == 56


# ------------------------------------------------------------------------------------------------ LP-Comp


def authors_layer_counts(schedule: list[int], layers: int) -> list[int]:
    """Tokens per frame each layer sees under the authors' loop: after layer ``rank - 1`` for every ``rank``
    in ``inner_condense_layers`` (``i`` with N(i) != N(i + 1)), the count becomes N(rank + 1)."""
    compress = [i for i in range(layers) if schedule[i] != schedule[i + 1]]
    counts, current = [], 16
    for layer_idx in range(layers):
        counts.append(current)
        rank_layer = layer_idx + 1
        if rank_layer in compress:
            current = schedule[rank_layer + 1]
    return counts


def test_lp_comp_counts_follow_the_schedule(xcomp_dirs):
    model = load_tiny_xcomp(xcomp_dirs)
    run = model.run(frames_of(24), 24.0, QUESTION, budget=4096, max_new_tokens=2)
    _ = run.text
    kept = len(run.kept_frames)  # 24 given frames repeated up to XComp's minimum of 128, all within budget
    expected = [kept * n for n in layer_counts(LAYERS)]
    assert kept == 128 and run.layer_tokens == expected == run.stream.layer_tokens
    assert expected == [kept * n for n in authors_layer_counts(lp_schedule(LAYERS), LAYERS)]
    assert run.method == "xcomp" and run.llm_tokens == kept * 16 and run.frame_scores is None


def naive_lp_prefill(llm, prompt: llm_ops.FlashPrompt, schedule: list[int]) -> torch.Tensor:
    """Last-position logits with LP-Comp written out with index lists: the stock layers on positions 0..L-1,
    and after layer ``rank - 1`` each frame's last N(rank + 1) visual tokens stay (``SelectTheNextHalf``)."""
    decoder, hidden = llm.model, prompt.embeds[None]
    compress = [i for i in range(LAYERS) if schedule[i] != schedule[i + 1]]
    per_frame = 16
    for layer_idx, layer in enumerate(decoder.layers):
        positions = torch.arange(hidden.shape[1])[None]
        hidden = layer(hidden, attention_mask=None, position_embeddings=decoder.rotary_emb(hidden, positions))
        if layer_idx + 1 in compress:
            keep = schedule[layer_idx + 2]
            rows = list(range(prompt.start))
            for f in range(prompt.frames):
                block = prompt.start + f * per_frame
                rows += list(range(block + per_frame - keep, block + per_frame))
            rows += list(range(prompt.start + prompt.frames * per_frame, hidden.shape[1]))
            hidden, per_frame = hidden[:, rows], keep
    return llm.lm_head(decoder.norm(hidden[0, -1]))


def tiny_prompt(model, frames: int = 16, seed: int = 0) -> llm_ops.FlashPrompt:
    visual = torch.randn(
        frames * 16, model.config.text.hidden_size, generator=torch.Generator().manual_seed(seed)
    )
    return model._prompt(visual, frames, *model._texts(float(frames), frames, QUESTION))


@torch.inference_mode()
def test_lp_comp_prefill_equals_a_naive_reference(xcomp_dirs):
    model = load_tiny_xcomp(xcomp_dirs)
    prompt = tiny_prompt(model)
    state = llm_ops.prefill(model.modules.llm, prompt, model.drops)
    reference = naive_lp_prefill(model.modules.llm, prompt, lp_schedule(LAYERS))
    torch.testing.assert_close(state.logits, reference.float(), rtol=1e-4, atol=1e-4)
    eager = copy.deepcopy(model.modules.llm)
    eager.config._attn_implementation = "eager"  # our explicit causal mask instead of the kernel's
    torch.testing.assert_close(
        llm_ops.prefill(eager, prompt, model.drops).logits, state.logits, rtol=1e-4, atol=1e-4
    )
    text = prompt.length - 16 * 16
    assert cache_lengths(state.cache) == [text + 16 * n for n in layer_counts(LAYERS)] == state.lengths


@torch.inference_mode()
def test_decoding_continues_each_layers_renumbered_sequence(xcomp_dirs):
    """Decode token k sits at layer j at L_j + k: the same logits as prefilling the prompt with the tokens."""
    model = load_tiny_xcomp(xcomp_dirs)
    llm, prompt = model.modules.llm, tiny_prompt(model, seed=1)
    state = llm_ops.prefill(llm, prompt, model.drops)
    embed = llm.get_input_embeddings()
    longer = prompt
    for step, token in enumerate((7, 11, 7)):
        logits = llm_ops.decode_step(llm, token, step, state)
        grown = torch.cat([longer.embeds, embed(torch.tensor([token]))])
        longer = llm_ops.FlashPrompt(grown, prompt.start, prompt.frames, prompt.user_end)
        torch.testing.assert_close(
            logits, llm_ops.prefill(llm, longer, model.drops).logits, rtol=1e-4, atol=1e-4
        )


# ------------------------------------------------------------------------------------------------ QC-Comp


@torch.inference_mode()
def test_window_scores_equal_stock_eager_attention_over_each_window(xcomp_dirs):
    model = load_tiny_xcomp(xcomp_dirs)
    llm = copy.deepcopy(model.modules.llm)
    llm.config._attn_implementation = "eager"
    prompt, n, scheme = (
        tiny_prompt(model, frames=24),
        12,
        llm_ops.ScoreWindows(window=2, stride=1, query_bias=3),
    )
    hidden = torch.randn(
        1, prompt.length - 24 * (16 - n), llm.config.hidden_size
    )  # a layer input, 12 per frame
    layer, rotary = llm.model.layers[3], llm.model.rotary_emb
    scores = llm_ops.layer_clip_scores(layer, rotary, hidden, n, prompt, scheme)
    image_end, user_end = prompt.start + 24 * n, prompt.user_end - 24 * (16 - n)
    found = {0: [], 1: [], 2: []}
    for p1 in (0, 1):  # windows of 2 clips (8 frames of n tokens) every clip, while they fit in 3
        clip_rows = slice(prompt.start + p1 * 8 * n, prompt.start + (p1 + 2) * 8 * n)
        seq = torch.cat([hidden[:, : prompt.start], hidden[:, clip_rows], hidden[:, image_end:user_end]], 1)
        x = layer.input_layernorm(seq)
        cos_sin = rotary(x, torch.arange(x.shape[1])[None])
        _, weights = layer.self_attn(x, position_embeddings=cos_sin, attention_mask=None)  # eager, no mask
        mean = weights[0].mean(0)
        queries = prompt.start + 2 * 8 * n + scheme.query_bias
        for c in (0, 1):
            cols = slice(prompt.start + c * 8 * n, prompt.start + (c + 1) * 8 * n)
            found[p1 + c].append(mean[queries:, cols].mean().item())
    assert scores[0] == scores[2] == llm_ops.EDGE_SCORE  # held by fewer windows than clip 1
    assert scores[1] == pytest.approx(sum(found[1]) / 2, rel=1e-5)


def authors_choice(count: int, segment_scores, *, duplic: int, stride: int, extra: int, keep: int, layers):
    """The frame choice of ``chat`` written as the authors loop: cyclic segments, per-layer lists of the
    finite scores below 1000, per-frame mean per layer summed over the layers, stable top ``keep``, sorted."""
    max_segments, min_rounds = stride + extra, (count + stride - 1) // stride
    starts, scores = [], []
    for i in range(duplic * min_rounds):
        start = (i * stride + i // min_rounds * (8 // duplic) + i // min_rounds * (stride // duplic)) % count
        end = (start + max_segments) % count
        frames = list(range(start, end)) if start < end else list(range(start, count)) + list(range(end))
        starts.append(start)
        scores.append(segment_scores(i, frames))
    table = {layer: [[] for _ in range(count)] for layer in layers}
    for start, score in zip(starts, scores, strict=True):
        for layer in layers:
            for i in range(max_segments):
                value = score[layer][i // 8]
                if value == value and value < 1000:
                    table[layer][(i + start) % count].append(value)
    total = [sum(sum(table[layer][j]) / len(table[layer][j]) for layer in layers) for j in range(count)]
    ranked = sorted([(j, total[j]) for j in range(count)], key=lambda x: x[1], reverse=True)
    return sorted(j for j, _ in ranked[:keep])


def test_qc_selection_follows_the_authors_loops():
    layers = (2, 3, 5)

    def synthetic(i: int, frames: list[int]) -> dict[int, list[float]]:
        clips = [frames[c : c + 8] for c in range(0, len(frames), 8)]
        values = {j: [float(np.sin(1.7 * sum(c) + j + 0.1 * i) ** 2) for c in clips] for j in layers}
        for v in values.values():
            v[0] = v[-1] = llm_ops.EDGE_SCORE  # edge clips, as the windows leave them
            v[len(v) // 2] = float("nan")
        return values

    for count, duplic, keep in ((1024, 2, 512), (1024, 8, 256), (1100, 3, 333), (2048, 2, 1024)):
        segments = plan.qc_segments(count, stride=512, extra=64, duplicates=duplic)
        scores = [synthetic(i, s) for i, s in enumerate(segments)]
        chosen, totals = plan.select_frames(segments, scores, count, keep)
        assert chosen == authors_choice(
            count, synthetic, duplic=duplic, stride=512, extra=64, keep=keep, layers=layers
        )
        assert len(chosen) == keep and chosen == sorted(chosen) and len(totals) == count


def test_xcomp_answers_from_the_frames_qc_comp_selects(xcomp_dirs, monkeypatch):
    """64 sampled frames, QC-Comp scaled down (segments of 32 + 16 frames, windows of 2 clips every clip):
    the kept frames are the authors' choice from the scores the model computed for each segment."""
    recorded = []
    real = llm_ops.segment_scores

    def record(llm, prompt, drops, layers, scheme):
        recorded.append(real(llm, prompt, drops, layers, scheme))
        assert prompt.frames == 48
        return recorded[-1]

    monkeypatch.setattr(llm_ops, "segment_scores", record)
    base, weights = xcomp_dirs
    scheme = llm_ops.ScoreWindows(window=2, stride=1)
    options = xcomp_options(windows=scheme, segment_frames=32, duplicates=2, min_frames=64)
    rule = plan.SamplingRule(fps=1, min_frames=8, max_frames=64)
    model = vcf.load_xcomp(weights, base=base, options=options, device="cpu", vision=TINY_UMT, sampling=rule)
    run = model.run(frames_of(64, seed=2), 64.0, QUESTION, budget=512, max_new_tokens=2)
    expected = authors_choice(
        64, lambda i, _: recorded[i], duplic=2, stride=32, extra=16, keep=32, layers=qc_layers(LAYERS)
    )
    assert len(recorded) == 4 and run.kept_frames == expected and run.frame_indices == list(range(64))
    assert run.llm_tokens == 32 * 16 <= run.budget and run.layer_tokens == [
        32 * n for n in layer_counts(LAYERS)
    ]
    finite = [s for s in run.frame_scores if s != float("-inf")]
    assert len(finite) == 64 and all(np.isfinite(finite))
    assert answered(run) and "select_s" in run.timings


def test_xcomp_below_the_qc_threshold_takes_the_budgets_frames_evenly(xcomp_dirs):
    model = load_tiny_xcomp(xcomp_dirs)  # min_frames 1024: QC-Comp does not run on 128 frames
    run = model.run(frames_of(40), 20.0, QUESTION, budget=1024, max_new_tokens=1)
    assert len(run.frame_indices) == 128  # 40 given frames, repeated up to XComp's minimum of 128
    assert len(run.kept_frames) == 64 and run.frame_scores is None and run.notes


def test_bf16_runs_end_to_end_with_qc_comp(xcomp_dirs):
    """The GPU dtype on the CPU: every tensor meets the weights' dtype (position table, ToMe, window scores)."""
    base, weights = xcomp_dirs
    options = xcomp_options(
        windows=llm_ops.ScoreWindows(window=2, stride=1), segment_frames=32, min_frames=64
    )
    rule = plan.SamplingRule(fps=1, min_frames=8, max_frames=64)
    model = vcf.load_xcomp(
        weights,
        base=base,
        options=options,
        device="cpu",
        dtype=torch.bfloat16,
        vision=TINY_UMT,
        sampling=rule,
    )
    assert {t.dtype for t in model.modules.official_tensors().values()} == {torch.bfloat16}
    run = model.run(frames_of(64, seed=4), 64.0, QUESTION, budget=512, max_new_tokens=3)
    assert answered(run) and len(run.kept_frames) == 32 and run.frame_scores is not None


def test_options_that_do_not_fit_the_model_are_refused_before_loading(xcomp_dirs):
    base, weights = xcomp_dirs
    for options in (
        xcomp_options(qc_layers=(LAYERS,)),
        vcf.XCompOptions(lp_schedule=(16, 8, 4), qc_layers=(1,)),
    ):
        with pytest.raises(ValueError, match="qc_layers must lie|an LP-Comp schedule has"):
            vcf.load_xcomp(weights, base=base, options=options, device="cpu", vision=TINY_UMT)
