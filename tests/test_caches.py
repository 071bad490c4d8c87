"""The shared caches: work done once per video, reused across methods and follow-ups, bounded, exact."""

import dataclasses
import os

import numpy as np
import pytest
import torch

import media
from model_zoo import load_backbone
from pipeline import cache, video
from pipeline import events as ev
from pipeline.compare import compare
from pipeline.request import Request
from pipeline.settings import Settings
from tests.videos import make_clip

SETTINGS = Settings.for_backbone("tiny-random", budget=48, max_frames=16, fps=4.0, max_new_tokens=4)
REPRODUCIBLE = ("answer", "error", "tokens", "kept", "kept_frames", "segments", "extra")


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    folder = tmp_path_factory.mktemp("cache-clips")
    return [make_clip(folder / f"clip{i}.mp4", seconds=4 + i, fps=8, size=(128, 96)) for i in range(2)]


@pytest.fixture(autouse=True)
def fresh_caches():
    before = cache.cache_settings()
    cache.clear_caches()
    yield
    cache.configure_caches(before)
    cache.clear_caches()


@pytest.fixture
def calls(monkeypatch):
    """Counts of the expensive calls behind each cache."""
    backbone = load_backbone("tiny-random")
    counts = dict.fromkeys(("probe", "fingerprint", "sample", "encode", "relevance"), 0)

    def counting(name, fn):
        def wrapper(*args, **kwargs):
            counts[name] += 1
            return fn(*args, **kwargs)

        return wrapper

    monkeypatch.setattr(media, "probe", counting("probe", media.probe))
    monkeypatch.setattr(media, "fingerprint", counting("fingerprint", media.fingerprint))
    monkeypatch.setattr(media, "sample", counting("sample", media.sample))
    monkeypatch.setattr(backbone, "encode", counting("encode", backbone.encode))
    monkeypatch.setattr(backbone, "next_token_logits", counting("relevance", backbone.next_token_logits))
    return counts


def _reports(source, question="What is shown?", settings=SETTINGS):
    finished = list(compare(Request(source, question, settings)))[-1]
    assert isinstance(finished, ev.Finished)
    return finished.reports


def _reproducible(reports) -> dict:
    return {m: {k: getattr(r, k) for k in REPRODUCIBLE} for m, r in reports.items()}


def test_five_methods_share_one_probe_decode_and_encode_and_a_follow_up_pays_none(clips, calls):
    reports = _reports(clips[0])
    assert all(r.error is None for r in reports.values())
    once = {"probe": 1, "fingerprint": 1, "sample": 1, "encode": 1}
    assert {k: calls[k] for k in once} == once
    _reports(clips[0], question="And what happens next?")
    assert {k: calls[k] for k in once} == once


def test_other_sampling_settings_or_another_video_do_their_own_work(clips, calls):
    _reports(clips[0])
    _reports(clips[0], settings=dataclasses.replace(SETTINGS, max_frames=8))
    assert (calls["sample"], calls["encode"], calls["probe"]) == (2, 2, 1)
    _reports(clips[1])
    assert (calls["sample"], calls["encode"], calls["probe"]) == (3, 3, 2)


def test_relevance_is_computed_once_per_question_and_reused_with_another_budget(clips, calls):
    tempo = dataclasses.replace(SETTINGS, methods=("tempo",))
    first = _reports(clips[0], "Where is the ball?", tempo)["tempo"]
    per_question = calls["relevance"]
    assert per_question >= 1
    rerun = _reports(clips[0], "Where is the ball?", dataclasses.replace(tempo, budget=32))["tempo"]
    assert calls["relevance"] == per_question, "same question: the scores come from the cache"
    assert [s["score"] for s in rerun.segments] == [s["score"] for s in first.segments]
    assert rerun.tokens["llm_input"] <= 32 < first.tokens["llm_input"]
    _reports(clips[0], "What colour is the square?", tempo)
    assert calls["relevance"] == 2 * per_question, "a different question recomputes"


def test_relevance_is_keyed_by_backbone_settings_too(clips, calls):
    tempo = dataclasses.replace(SETTINGS, methods=("tempo",), budget=24)
    _reports(clips[0], "Where is the ball?", tempo)
    per_question = calls["relevance"]
    fewer = _reports(clips[0], "Where is the ball?", dataclasses.replace(tempo, max_frames=8))["tempo"]
    assert fewer.tokens["llm_input"] < fewer.tokens["raw"], "Tempo must have compressed (scored) here"
    assert calls["relevance"] == 2 * per_question


def test_answers_and_accounting_are_identical_with_and_without_the_caches(clips):
    cold = _reproducible(_reports(clips[0]))
    warm = _reproducible(_reports(clips[0]))  # every cache hit: probe, frames, tokens, relevance
    assert cache.cache_stats()["relevance"]["hits"] >= 1
    assert cache.cache_stats()["prefixes"]["hits"] >= 1
    cache.configure_caches(
        frames_mb=0, tokens_mb=0, relevance_mb=0, compressions_mb=0, prefixes_mb=0, probes=0
    )
    off = _reproducible(_reports(clips[0]))
    assert all(stats["entries"] == 0 for stats in cache.cache_stats().values())
    assert cold == warm == off


def test_cached_values_are_cpu_data_only(clips):
    _reports(clips[0])
    for name in ("frames", "tokens", "relevance", "compressions", "prefixes"):
        assert len(cache.CACHES[name]) >= 1, name
        for value, _ in cache.CACHES[name]._items.values():
            tensors = _tensors(value)
            assert all(t.device.type == "cpu" for t in tensors), name
    assert any(_tensors(v) for v, _ in cache.TOKENS._items.values())


def _tensors(value) -> list[torch.Tensor]:
    if isinstance(value, torch.Tensor):
        return [value]
    if isinstance(value, (list, tuple)):
        return [t for v in value for t in _tensors(v)]
    if dataclasses.is_dataclass(value):
        return [t for f in dataclasses.fields(value) for t in _tensors(getattr(value, f.name))]
    return []


@pytest.fixture
def prefix_runs(monkeypatch):
    """Prompt prefixes the engine computes, per call: [number of prompts]."""
    from model_zoo import engine

    runs = []
    real = engine.run_prefixes

    def counting(model, layouts, **kwargs):
        runs.append(len(layouts))
        return real(model, layouts, **kwargs)

    monkeypatch.setattr(engine, "run_prefixes", counting)
    return runs


def test_a_follow_up_question_runs_no_prompt_prefix_again(clips, prefix_runs):
    first = _reports(clips[0], "Where is the ball?")
    assert first["xcomp"].extra["qc_comp"], "XComp must score its windows here (QC-Comp)"
    # Tempo's prompts (one per segment), XComp's window, the question-independent methods' answers (the
    # question-conditioned methods' answers run whole: their visual tokens change with the question).
    kept = len(first["tempo"].segments) + 1 + len(("espresso", "uniform", "pool"))
    assert sum(prefix_runs) == len(cache.PREFIXES) == kept
    prefix_runs.clear()
    follow_up = _reports(clips[0], "What colour is the square?")
    assert prefix_runs == [], "every prefix comes from the cache"
    assert cache.PREFIXES.stats()["hits"] == kept
    cache.clear_caches()
    assert _reproducible(_reports(clips[0], "What colour is the square?")) == _reproducible(follow_up)


def test_each_column_says_what_it_took_from_the_caches(clips):
    from pipeline.report import timings_frame

    first = _reports(clips[0], "Where is the ball?")
    assert all(r.timings["reused"] == [] for r in first.values())
    follow_up = _reports(clips[0], "What colour is the square?")
    reused = {m: r.timings["reused"] for m, r in follow_up.items()}
    for method in ("espresso", "uniform", "pool"):
        assert reused[method] == ["compression", "answer prompt prefix"], method
    assert reused["xcomp"] == ["1 scoring prompt prefix"]
    tempo_prompts = len(follow_up["tempo"].segments)
    assert reused["tempo"] == [f"{tempo_prompts} scoring prompt prefix{'es' if tempo_prompts > 1 else ''}"]
    rebudget = _reports(clips[0], "What colour is the square?", dataclasses.replace(SETTINGS, budget=40))
    assert rebudget["tempo"].timings["reused"] == ["relevance scores"]
    table = timings_frame(follow_up, {})
    assert list(table["from caches"]) == [", ".join(reused[m]) for m in follow_up]
    assert list(timings_frame(first, {})["from caches"]) == ["–"] * len(first)


def test_a_new_budget_recomputes_answer_prefixes_but_reuses_relevance_prompts(clips, prefix_runs):
    tempo_and_pool = dataclasses.replace(SETTINGS, methods=("tempo", "pool"))
    _reports(clips[0], "Where is the ball?", tempo_and_pool)
    prefix_runs.clear()
    _reports(clips[0], "What colour is the square?", dataclasses.replace(tempo_and_pool, budget=40))
    assert prefix_runs == [1], "Tempo's relevance prompts come from the cache; pool's answer is new"


def test_the_prefix_cache_stays_within_its_bound(clips):
    _reports(clips[0])
    everything = cache.PREFIXES.size_bytes
    assert everything > 0
    cache.clear_caches()
    cache.configure_caches(prefixes_mb=everything / 3 / cache.MB)
    _reports(clips[0])
    assert 0 < cache.PREFIXES.size_bytes <= cache.PREFIXES.max_bytes < everything


def test_token_cache_bound_evicts_the_least_recently_used_video(clips):
    _reports(clips[0])
    one_video = cache.TOKENS.size_bytes
    cache.configure_caches(tokens_mb=1.5 * one_video / cache.MB)
    _reports(clips[1])  # does not fit beside the first one: the first goes
    assert cache.TOKENS.size_bytes <= cache.TOKENS.max_bytes
    assert len(cache.TOKENS) == 1
    (key,) = cache.TOKENS._items
    assert key[0] == media.fingerprint(clips[1])


def test_shrinking_a_cache_evicts_at_once_and_zero_turns_it_off(clips):
    _reports(clips[0])
    assert len(cache.FRAMES) == 1
    cache.configure_caches(frames_mb=0.001)
    assert len(cache.FRAMES) == 0 and cache.FRAMES.size_bytes == 0
    cache.configure_caches(frames_mb=0)
    _reports(clips[0])
    assert len(cache.FRAMES) == 0


def test_configure_keeps_unnamed_sizes_and_refuses_bad_ones():
    settings = cache.configure_caches(tokens_mb=64)
    assert settings.tokens_mb == 64 and settings.frames_mb == cache.CacheSettings().frames_mb
    assert cache.TOKENS.max_bytes == 64 * cache.MB
    with pytest.raises(cache.CacheSettingsError, match="frames_mb"):
        cache.configure_caches(frames_mb=-1)
    with pytest.raises(cache.CacheSettingsError, match="valid: frames_mb"):
        cache.configure_caches(frame_mb=1)
    assert cache.cache_settings().tokens_mb == 64


def test_a_file_changed_in_place_is_probed_again(tmp_path, calls):
    path = make_clip(tmp_path / "v.mp4", seconds=3, fps=8, size=(128, 96))
    first = video._probe(path)
    assert video._probe(path) == first and calls["probe"] == 1
    make_clip(tmp_path / "other.mp4", seconds=5, fps=8, size=(128, 96)).replace(path)
    st = os.stat(path)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))
    info, fingerprint = video._probe(path)
    assert calls["probe"] == 2 and fingerprint != first[1] and info.duration > first[0].duration


def test_the_same_video_uploaded_again_under_another_name_is_hashed_but_not_probed_again(tmp_path, calls):
    path = make_clip(tmp_path / "v.mp4", seconds=3, fps=8, size=(128, 96))
    copy = tmp_path / "again.mp4"
    copy.write_bytes(path.read_bytes())
    info, fingerprint = video._probe(path)
    again, same = video._probe(copy)
    assert same == fingerprint and calls["probe"] == 1 and calls["fingerprint"] == 2
    assert again.path == str(copy) and dataclasses.replace(again, path=info.path) == info


def test_a_missing_file_is_still_the_plain_video_error(tmp_path):
    with pytest.raises(media.VideoNotFoundError):
        video._probe(tmp_path / "no-such-video.mp4")
    assert len(cache.PROBES) == 0


def test_max_items_bounds_entries_that_hold_no_bytes():
    lru = cache.ByteLRU(1 << 20, max_items=2, count_keys=True)
    for key in "abc":
        lru.put(key, key * 3)
    assert list(lru._items) == ["b", "c"]
    assert lru.size_bytes == 2  # the keys' characters; plain strings as values hold no tensor bytes


def test_relevance_hooks_pass_other_segments_through_uncached():
    video = _FakeVideo(torch.randn(4, 3, 2))
    backbone = _FakeBackbone()
    hooks = cache.CachedHooks(backbone, video, video_key=("v",), question="q", cache=cache.ByteLRU(1 << 20))
    own = [[_Seg(video.embeds[g]) for g in (0, 1)], [_Seg(video.embeds[2])]]
    foreign = [[_Seg(video.embeds[0].clone())]]
    for _ in range(2):
        assert hooks.next_token_logits(own, system="s", user_text="u", words=("Yes", "No")).shape == (2, 2)
        hooks.next_token_logits(foreign, system="s", user_text="u", words=("Yes", "No"))
    assert backbone.calls == 3 and (hooks.computed, hooks.reused) == (3, 1)
    hooks.next_token_logits(own, system="s", user_text="other", words=("Yes", "No"))
    assert backbone.calls == 4


def test_group_views_are_recognised_exactly():
    whole = torch.arange(24.0).reshape(4, 3, 2)
    assert [cache._group_of(whole[g], whole) for g in range(4)] == [0, 1, 2, 3]
    assert cache._group_of(whole[1].clone(), whole) is None
    assert cache._group_of(whole[1, :2], whole) is None
    assert cache._group_of(whole.reshape(-1)[1:7].reshape(3, 2), whole) is None  # straddles two groups


@dataclasses.dataclass
class _FakeVideo:
    embeds: torch.Tensor

    @property
    def deepstack(self):
        return []


@dataclasses.dataclass
class _Seg:
    embeds: torch.Tensor
    text: str = "<0.0 seconds>"
    deepstack: list = dataclasses.field(default_factory=list)

    @property
    def positions(self):
        return torch.zeros(self.embeds.shape[0], 3, dtype=torch.long)


class _FakeBackbone:
    num_layers = 2

    def __init__(self):
        self.calls = 0

    def next_token_logits(self, prompts, *, system, user_text, words, **reuse):
        self.calls += 1
        return torch.as_tensor(
            np.random.default_rng(self.calls).normal(size=(len(prompts), len(words)))
        ).float()


@pytest.fixture
def compress_calls(monkeypatch):
    """Calls of each method's ``compress`` (the real one runs)."""
    import compressors

    counts: dict[str, int] = {}
    real_build = compressors.build

    def build(name, **options):
        compressor = real_build(name, **options)
        real = compressor.compress

        def compress(*args, **kwargs):
            counts[name] = counts.get(name, 0) + 1
            return real(*args, **kwargs)

        object.__setattr__(compressor, "compress", compress)
        return compressor

    monkeypatch.setattr(compressors, "build", build)
    return counts


def test_question_conditioned_is_declared_by_every_method():
    import compressors

    flags = {
        m: compressors.build(m).question_conditioned
        for m in ("espresso", "uniform", "pool", "xcomp", "tempo")
    }
    assert flags == {"espresso": False, "uniform": False, "pool": False, "xcomp": True, "tempo": True}


def test_a_follow_up_compresses_again_only_with_question_conditioned_methods(clips, compress_calls):
    first = _reports(clips[0])
    assert all(r.error is None for r in first.values())
    assert compress_calls == dict.fromkeys(SETTINGS.methods, 1)
    follow = _reports(clips[0], question="And what happens next?")
    assert compress_calls == {"espresso": 1, "uniform": 1, "pool": 1, "xcomp": 2, "tempo": 2}
    assert cache.cache_stats()["compressions"]["hits"] == 3
    cache.clear_caches()
    cold = _reports(clips[0], question="And what happens next?")
    assert _reproducible(follow) == _reproducible(cold)
    assert all(follow[m].timings.keys() == cold[m].timings.keys() for m in SETTINGS.methods)
    # another budget or another video compresses again; a cached compression is CPU data only
    _reports(clips[0], settings=dataclasses.replace(SETTINGS, budget=32))
    assert compress_calls["uniform"] == 3
    for value, _ in cache.COMPRESSIONS._items.values():
        assert all(t.device.type == "cpu" for t in _tensors(value))
    cache.configure_caches(compressions_mb=0)
    _reports(clips[0], question="Once more?")
    assert compress_calls["pool"] == 4
