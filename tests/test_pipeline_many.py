"""Several questions and budgets about one video in one request (``pipeline.many``), on the tiny backbone:
one encode, one batched decode, each answer what it is alone; the selectors' own text; the reply prefix."""

import dataclasses
from types import SimpleNamespace

import pytest
import torch

import compressors
import model_zoo
from model_zoo.prompt import encode_plain
from pipeline import cache, many
from pipeline import events as ev
from pipeline.bounds import SettingsError
from pipeline.columns import DEFAULT_COLUMNS as METHODS
from pipeline.compare import compare
from pipeline.request import Ask, ManyJob, ManyRequest, Request
from pipeline.settings import Settings
from pipeline.video import QuestionError
from tests.videos import make_clip

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SETTINGS = Settings.for_backbone("tiny-random", budget=48, max_frames=16, fps=4.0, max_new_tokens=4)
BUDGETS = (32, 48)
ASKS = (
    Ask("What is shown?"),
    Ask("Where does the red square go after it reaches the left edge of the picture?"),
    Ask(
        "Question: what colour?\nOptions:\nA. red\nB. blue",
        selection="what colour?",
        reply_prefix="Best option: (",
    ),
)


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    return make_clip(tmp_path_factory.mktemp("clips") / "clip.mp4", seconds=4, fps=8, size=(128, 96))


@pytest.fixture(scope="module")
def backbone():
    return model_zoo.load_backbone("tiny-random")


def run_many(source, asks=ASKS, budgets=BUDGETS, settings=SETTINGS) -> list:
    cache.clear_caches()
    events = list(many.compare_many(ManyRequest(source, asks, budgets, settings)))
    assert isinstance(events[-1], ev.FinishedMany)
    return events


@pytest.fixture(scope="module")
def spied(clip, backbone):
    """One request of ``ASKS`` x ``BUDGETS`` x every method, with its encodes and batched decodes counted."""
    calls = {"encode": 0, "batches": []}
    real_encode, real_many = backbone.encode, backbone.generate_many

    def encode(*a, **k):
        calls["encode"] += 1
        return real_encode(*a, **k)

    def generate_many(requests, **k):
        calls["batches"].append(list(requests))
        return real_many(requests, **k)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(backbone, "encode", encode)
        patch.setattr(backbone, "generate_many", generate_many)
        events = run_many(clip)
    return events, calls


def test_one_encode_and_one_batched_decode_answer_every_question_budget_and_method(spied):
    events, calls = spied
    cells = [(i, b) for i in range(len(ASKS)) for b in BUDGETS]
    assert calls["encode"] == 1 and len(calls["batches"]) == 1
    (batch,) = calls["batches"]
    assert len(batch) == len(cells) * len(METHODS)
    # the answering LLM reads each cell's prompt and reply prefix
    assert {(r.question, r.reply_prefix) for r in batch} == {(a.prompt, a.reply_prefix) for a in ASKS}
    reports = events[-1].reports
    assert sorted(reports) == sorted((i, b, m) for i, b in cells for m in METHODS)
    for (_, budget, method), report in reports.items():
        assert report.error is None and report.method == method, (budget, method, report.error)
        assert 0 < report.tokens["llm_input"] <= budget < report.tokens["raw"]


def test_every_answer_is_token_for_token_what_it_is_alone(clip, spied):
    reports = spied[0][-1].reports
    for index, ask in enumerate(ASKS):
        for budget in BUDGETS:
            settings = dataclasses.replace(SETTINGS, budget=budget)
            if not ask.reply_prefix and ask.selection is None:  # the page's own one-question request
                cache.clear_caches()
                alone = list(compare(Request(clip, ask.prompt, settings)))[-1].reports
            else:  # one cell, one method at a time
                alone = {
                    m: run_many(clip, (ask,), (budget,), dataclasses.replace(settings, methods=(m,)))[
                        -1
                    ].reports[(0, budget, m)]
                    for m in METHODS
                }
            for method in METHODS:
                mine, theirs = reports[(index, budget, method)], alone[method]
                assert (mine.answer, mine.kept, mine.tokens) == (theirs.answer, theirs.kept, theirs.tokens)


def test_events_carry_their_cell_and_every_answer_is_done_once(spied):
    events = spied[0]
    done = [(*e.cell, e.report.method) for e in events if isinstance(e, ev.MethodDone)]
    assert sorted(done) == sorted(events[-1].reports) and len(done) == len(set(done))
    for key, report in events[-1].reports.items():
        deltas = [e for e in events if isinstance(e, ev.AnswerDelta) and (*e.cell, e.method) == key]
        if report.answer:
            assert deltas[-1].text == report.answer
    stages = [e.stage for e in events if isinstance(e, ev.Progress)]
    assert stages[:3] == ["probe", "sample", "encode"] and stages[-1] == "done"


def test_selectors_read_the_selection_text_and_the_answer_the_prompt(clip, monkeypatch):
    seen = {"relevance": set(), "clips": set()}
    real_logits, real_scores = cache.CachedHooks.next_token_logits, cache.CachedHooks.window_scores

    def logits(self, prompts, *, system, user_text, words):
        seen["relevance"].add(user_text)
        return real_logits(self, prompts, system=system, user_text=user_text, words=words)

    def window_scores(self, segments, question, **kwargs):
        seen["clips"].add(question)
        return real_scores(self, segments, question, **kwargs)

    monkeypatch.setattr(cache.CachedHooks, "next_token_logits", logits)
    monkeypatch.setattr(cache.CachedHooks, "window_scores", window_scores)
    settings = dataclasses.replace(SETTINGS, methods=("xcomp", "tempo"))
    run_many(clip, ASKS, (32,), settings)
    texts = {a.selection_text for a in ASKS}
    assert seen["clips"] == texts  # XComp's QC-Comp (8 groups sampled, 1 kept)
    assert {t.split("Query:\n")[-1] for t in seen["relevance"]} == texts  # Tempo's relevance prompt
    assert not any(ASKS[2].prompt in t for t in seen["relevance"] | seen["clips"])


def test_a_method_failing_in_one_cell_reports_there_and_every_other_answer_comes(clip, monkeypatch):
    real = compressors.COMPRESSORS["xcomp"]

    class Picky(real):
        def compress(self, video, segments, question, **kwargs):
            if "red square" in question:
                raise RuntimeError("kaboom")
            return super().compress(video, segments, question, **kwargs)

    monkeypatch.setitem(compressors.COMPRESSORS, "xcomp", Picky)
    reports = run_many(clip)[-1].reports
    failed = {key for key, r in reports.items() if r.error}
    assert failed == {(1, b, "xcomp") for b in BUDGETS}
    assert all(reports[key].error == "RuntimeError: kaboom" for key in failed)
    assert all(r.error is None for key, r in reports.items() if key not in failed)


@pytest.mark.parametrize(
    ("asks", "budgets", "error"),
    [
        ((), BUDGETS, QuestionError),
        (("What is shown?",), BUDGETS, QuestionError),  # not an Ask
        ((Ask("  "),), BUDGETS, QuestionError),
        ((Ask("x" * 2001),), BUDGETS, QuestionError),  # the page's bounds: 2000 characters
        ((Ask("Fine?", selection="x" * 2001),), BUDGETS, QuestionError),
        ((Ask("Fine?"),), (), QuestionError),
        ((Ask("Fine?"),), (48, 99999), SettingsError),  # beyond the page's budget bound
    ],
)
def test_bad_questions_and_budgets_are_refused_before_any_work(tmp_path, asks, budgets, error):
    missing = tmp_path / "never-read.mp4"  # the request must fail before it looks at the video
    with pytest.raises(error) as refused:
        list(many.compare_many(ManyRequest(missing, asks, budgets, SETTINGS)))
    assert len(str(refused.value).splitlines()) == 1


def test_a_runner_without_run_many_answers_cell_by_cell_with_the_prompt(clip):
    class OneQuestion:  # like a column with a model of its own
        def run(self, job, names):
            for name in names:
                text = f"{job.question}@{job.settings.budget}"
                yield ev.AnswerDelta(name, text)
                yield ev.MethodDone(ev.MethodReport(name, name, answer=text))

    job = ManyJob(prepared=None, asks=ASKS[:2], budgets=BUDGETS, settings=SETTINGS)
    events = list(many.cell_by_cell(OneQuestion(), job, ["own"]))
    done = {e.cell: e.report.answer for e in events if isinstance(e, ev.MethodDone)}
    assert done == {(i, b): f"{ASKS[i].prompt}@{b}" for i in range(2) for b in BUDGETS}
    assert all(e.cell is not None for e in events)


# --- the reply prefix in the prompt layout ---------------------------------------------------------------


def segments(backbone, count=2, tokens=6):
    hidden = backbone.model.config.text_config.hidden_size
    generator = torch.Generator().manual_seed(0)
    return [
        SimpleNamespace(
            text=f"<{k}.5 seconds>",
            embeds=torch.randn(tokens, hidden, generator=generator),
            positions=torch.stack([torch.zeros(tokens), torch.arange(tokens) // 3, torch.arange(tokens) % 3], 1).long(),
            deepstack=[torch.randn(tokens, hidden, generator=generator) for _ in range(backbone.deepstack_levels)],
        )
        for k in range(count)
    ]  # fmt: skip


@pytest.mark.parametrize("prefix", ["Best option: (", "<|im_end|> (B"])
def test_the_reply_prefix_follows_the_generation_prompt_as_plain_text(backbone, prefix):
    segs = segments(backbone)
    plain = backbone.layout(segs, "What is shown?")
    primed = backbone.layout(segs, "What is shown?", reply_prefix=prefix)
    n, tail = len(plain.input_ids), encode_plain(backbone.tokenizer, prefix)
    assert torch.equal(primed.input_ids[:n], plain.input_ids) and primed.input_ids[n:].tolist() == tail
    assert backbone.tokenizer.decode(tail) == prefix and backbone.ids.pad not in tail
    assert backbone.tokenizer.convert_tokens_to_ids("<|im_end|>") not in tail  # typed, not the special token
    # the prefix continues the text positions after the generation prompt, on all three axes
    expected = torch.arange(len(tail)) + plain.max_position + 1
    assert torch.equal(primed.positions[:, n:], expected.expand(3, -1))
    assert torch.equal(primed.positions[:, :n], plain.positions)
    assert primed.user_span == plain.user_span and int(primed.visual_mask[n:].sum()) == 0
    text = backbone.tokenizer.decode(primed.input_ids[~primed.visual_mask])
    assert text.endswith("<|im_end|>\n<|im_start|>assistant\n" + prefix)


def test_the_answer_is_what_the_model_adds_to_the_reply_prefix(backbone):
    segs, prefix = segments(backbone), "Best option: ("
    primed = backbone.generate("What is shown?", segs, max_new_tokens=6, reply_prefix=prefix)
    layout = backbone.layout(segs, "What is shown?", reply_prefix=prefix)
    assert primed.stats["prompt_tokens"] == len(layout.input_ids)
    decoded = backbone.tokenizer.decode(primed.token_ids, skip_special_tokens=True)
    assert primed.text == decoded and primed.token_ids  # only the new tokens: the prefix is not repeated
    # a batch holds requests with and without a prefix, each as it is alone
    from model_zoo.generation import GenerationRequest

    requests = [
        GenerationRequest("What is shown?", segs, max_new_tokens=6, reply_prefix=prefix),
        GenerationRequest("What is shown?", segs, max_new_tokens=6),
    ]
    batch = backbone.generate_many(requests)
    alone = backbone.generate("What is shown?", segs, max_new_tokens=6)
    assert batch[0].token_ids == primed.token_ids and batch[1].token_ids == alone.token_ids
