"""evaluation: the five benchmark layouts, the prompt, the answer parser and the statistics (no model)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from evaluation import benchmarks, prompts, stats
from evaluation.benchmarks import BenchmarkError, Question


def write_json(path: Path, value) -> Path:
    path.write_text(json.dumps(value))
    return path


def write_lines(path: Path, rows) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


# --- readers: every layout becomes the same Question --------------------------------------------------


def test_jsonl_layout_reads_options_answer_groups_and_needle(tmp_path):
    rows = [
        {"video": "a.mp4", "question": "Which?", "options": ["x", "y", "z"], "answer": "c", "groups": {"kind": "word"}},
        {"qid": "n1", "video": "b.mp4", "question": "Q", "options": ["p", "q"], "answer": "A",
         "duration": 12.5, "needle": {"start": 3, "end": 5, "word": "LEMON"}},
    ]  # fmt: skip
    first, second = benchmarks.read(write_lines(tmp_path / "b.jsonl", rows), "jsonl")
    assert (first.qid, first.video, first.options, first.answer) == ("1", "a.mp4", ("x", "y", "z"), "C")
    assert first.groups == {"kind": "word"} and first.needle is None
    assert (second.qid, second.duration, second.needle) == ("n1", 12.5, (3.0, 5.0))


def test_videomme_rows_are_relettered_from_their_bare_text(tmp_path):
    row = {
        "video_id": "001", "duration": "short", "domain": "Knowledge", "sub_category": "Humanity & History",
        "url": "https://www.youtube.com/watch?v=fFjv93ACGo8", "videoID": "fFjv93ACGo8", "question_id": "001-1",
        "task_type": "Counting Problem", "question": "How many red socks?",
        "options": ["A. Four.", "B. Five.", "C. Six.", "D. Seven."], "answer": "C",
    }  # fmt: skip
    for path in (write_json(tmp_path / "vm.json", [row]), write_lines(tmp_path / "vm.jsonl", [row])):
        (q,) = benchmarks.read(path, "videomme")
        assert q.video == "fFjv93ACGo8.mp4" and q.qid == "001-1" and q.answer == "C"
        assert q.options == ("Four.", "Five.", "Six.", "Seven.")
        assert q.groups == {
            "duration": "short", "domain": "Knowledge", "sub_category": "Humanity & History",
            "task_type": "Counting Problem",
        }  # fmt: skip


def test_videomme_parquet_is_read_or_refused_with_what_to_install(tmp_path):
    row = {"videoID": "v", "question_id": "1", "question": "Q", "options": ["A. x", "B. y"], "answer": "B"}
    try:
        import pyarrow
        import pyarrow.parquet as pq
    except ImportError:
        path = tmp_path / "test-00000-of-00001.parquet"
        path.write_bytes(b"PAR1")
        with pytest.raises(BenchmarkError, match="pyarrow"):
            benchmarks.read(path, "videomme")
        return
    path = tmp_path / "t.parquet"
    pq.write_table(pyarrow.Table.from_pylist([row]), path)
    (q,) = benchmarks.read(path, "videomme")
    assert q.options == ("x", "y") and q.answer == "B"


def test_longvideobench_answer_is_the_index_of_the_correct_candidate(tmp_path):
    row = {
        "video_id": "86CxyhFV9MI", "question": "What is the man holding?", "candidates": ["a cup", "a pen", "a hat", "a bag", "a key"],
        "correct_choice": 4, "position": [1, 2], "topic_category": "NP-News-Programs", "question_category": "TOS",
        "level": "L2-Relation", "id": "86CxyhFV9MI_0", "video_path": "86CxyhFV9MI.mp4", "duration_group": 600, "duration": 527.0,
    }  # fmt: skip
    (q,) = benchmarks.read(write_json(tmp_path / "lvb_val.json", [row]), "longvideobench")
    assert (q.qid, q.video, q.answer, len(q.options), q.duration) == (
        "86CxyhFV9MI_0",
        "86CxyhFV9MI.mp4",
        "E",
        5,
        527.0,
    )
    assert q.groups == {
        "duration_group": "600",
        "question_category": "TOS",
        "topic_category": "NP-News-Programs",
    }


def test_mlvu_answer_text_becomes_its_letter_and_generation_tasks_are_skipped(tmp_path):
    folder = tmp_path / "MLVU" / "json"
    folder.mkdir(parents=True)
    plot = [{"video": "movie101_66.mp4", "duration": 246, "question": "What colour is the car?",
             "candidates": ["Red", "Blue", "Green", "White"], "answer": "Green", "question_type": "plotQA"}]  # fmt: skip
    write_json(folder / "1_plotQA.json", plot)
    write_json(folder / "10_count.json", [{**plot[0], "answer": "Red", "question_type": "count"}])
    write_json(folder / "8_sub_scene.json", [{"video": "s.mp4", "question": "Describe.", "answer": "text"}])
    questions = benchmarks.read(tmp_path / "MLVU", "mlvu")
    assert [q.qid for q in questions] == [
        "1_plotQA/0",
        "10_count/0",
    ]  # numeric file order, no generation task
    assert [q.answer for q in questions] == ["C", "A"]
    assert questions[0].groups == {"question_type": "plotQA"}
    video = tmp_path / "MLVU" / "video" / "1_plotQA" / "movie101_66.mp4"
    video.parent.mkdir(parents=True)
    video.write_bytes(b"x")
    assert questions[0].video_path(tmp_path / "MLVU") == video  # MLVU keeps each task's videos apart


def test_lvbench_options_are_split_out_of_the_question(tmp_path):
    row = {
        "key": "TeaqvoRmHFU", "type": "documentary", "video_info": {"duration_minutes": 64.5},
        "qa": [{"uid": "1", "question": "What year appears?\n(A) 1636\n(B) 1366\n(C) 1363\n(D) 1633",
                "answer": "A", "question_type": ["key information retrieval", "entity recognition"],
                "time_reference": "03:11-03:15"}],
    }  # fmt: skip
    (q,) = benchmarks.read(write_lines(tmp_path / "video_info.meta.jsonl", [row]), "lvbench")
    assert q.question == "What year appears?" and q.options == ("1636", "1366", "1363", "1633")
    assert (q.video, q.answer, q.duration) == ("TeaqvoRmHFU.mp4", "A", 64.5 * 60)
    assert q.groups["question_type"] == ["key information retrieval", "entity recognition"]


@pytest.mark.parametrize(
    ("layout", "content", "words"),
    [
        ("jsonl", '{"video": "a.mp4", "question": "Q", "options": ["x", "y"]}\n', "no 'answer'"),
        ("jsonl", '{"video": "a.mp4", "question": "Q", "options": ["x", "y"], "answer": "C"}\n', "not one of its 2"),
        ("jsonl", '{"video": "a.mp4", \n', "line 1 is not valid JSON"),
        ("jsonl", '{"qid": 1, "video": "a", "question": "Q", "options": ["x", "y"], "answer": "A"}\n' * 2, "appears twice"),
        ("longvideobench", '[{"id": 1, "video_path": "a", "question": "Q", "candidates": ["x"], "correct_choice": 0}]', "1 options"),
        ("longvideobench", '{"not": "a list"}', "not a list"),
        ("lvbench", '{"key": "k", "qa": [{"uid": 1, "question": "no options here", "answer": "A"}]}\n', "option lines in the question"),
        ("videomme", "", "holds no multiple-choice questions"),
    ],
)  # fmt: skip
def test_a_malformed_file_is_refused_with_where_and_why(tmp_path, layout, content, words):
    path = tmp_path / ("data.json" if layout in ("longvideobench", "videomme") else "data.jsonl")
    path.write_text(content if layout != "videomme" else "[]")
    with pytest.raises(BenchmarkError, match=words):
        benchmarks.read(path, layout)


def test_unknown_layout_and_missing_file_are_refused(tmp_path):
    with pytest.raises(BenchmarkError, match="Unknown layout 'nope'"):
        benchmarks.read(tmp_path, "nope")
    with pytest.raises(BenchmarkError, match="does not exist"):
        benchmarks.read(tmp_path / "missing.jsonl", "jsonl")


def test_file_hash_changes_with_the_content(tmp_path):
    path = write_lines(tmp_path / "a.jsonl", [{"x": 1}])
    before = benchmarks.file_hash(path)
    assert before == benchmarks.file_hash(path)
    path.write_text(path.read_text() + "\n")
    assert benchmarks.file_hash(path) != before


# --- prompt -------------------------------------------------------------------------------------------


def question(options=("Candles", "Balloons", "A cake", "Presents"), answer="B") -> Question:
    return Question(
        qid="q", video="v.mp4", question="What is on the table?", options=tuple(options), answer=answer
    )


def test_default_prompt_is_lmms_evals_layout():
    assert prompts.build_prompt(question()) == (
        "Question: What is on the table?\nOptions:\nA. Candles\nB. Balloons\nC. A cake\nD. Presents\n"
        "Answer with the option letter only."
    )


@pytest.mark.parametrize(
    ("layout", "start", "end"),
    [
        ("videomme", "Select the best answer", "Respond with only the letter (A, B, C, or D) of the correct option.\nWhat is on the table?\nA. Candles\nB. Balloons\nC. A cake\nD. Presents\nThe best answer is:"),
        ("longvideobench", "What is on the table?\nA. Candles", "D. Presents\nAnswer with the option's letter from the given choices directly."),
        ("mlvu", "Question: What is on the table?\nOptions:\n(A) Candles", "(D) Presents\nOnly give the best option."),
        ("lvbench", "What is on the table?\n(A) Candles", "(D) Presents\nAnswer the question with the option letter"),
    ],
)  # fmt: skip
def test_official_prompts_use_each_benchmarks_wording(layout, start, end):
    text = prompts.build_prompt(question(), style="official", layout=layout)
    assert text.startswith(start) and text.endswith(end)


# --- parser -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("reply", "letter", "rule"),
    [
        ("B", "B", "letter"),
        (" (B) ", "B", "letter"),
        ('"C."', "C", "letter"),
        ("<think>A or B? Surely A.</think>D", "D", "letter"),
        ("<think>it must be A", None, "unparsed"),  # thinking cut off: no answer given
        ("The answer is C because of the cake.", "C", "phrase"),
        ("Best option: (D)", "D", "phrase"),
        ("Answer: A", "A", "phrase"),
        ("The answer is: E, or maybe B", "B", "phrase"),  # E is not one of 4 options
        ("B. Balloons", "B", "leading"),
        ("D) Presents", "D", "leading"),
        ("A man lights the candles", "A", "text"),  # the article is not option A; the text names A
        ("A man walks in", None, "unparsed"),
        ("There are balloons on the table.", "B", "text"),
        ("candles and balloons", None, "unparsed"),  # two options named: ambiguous
        ("E", None, "unparsed"),  # out of range for 4 options
        ("", None, "unparsed"),
    ],
)
def test_parser_rules_in_order(reply, letter, rule):
    assert prompts.parse_answer(reply, question()) == (letter, rule)


def test_parser_accepts_letters_up_to_the_option_count():
    five = question(options=("a1", "b2", "c3", "d4", "e5"), answer="E")
    assert prompts.parse_answer("E", five) == ("E", "letter")
    assert prompts.parse_answer("E", question()) == (None, "unparsed")


# --- statistics ---------------------------------------------------------------------------------------


def slow_bootstrap(clusters, values, labels=None, *, resamples=stats.RESAMPLES, seed=stats.SEED):
    """The textbook loop: draw K videos with replacement, pool their questions, recompute the statistic."""
    labels = labels or [0] * len(values)
    videos = list(dict.fromkeys(clusters))
    items = {v: [(g, x) for c, g, x in zip(clusters, labels, values, strict=True) if c == v] for v in videos}

    def statistic(pool):
        per_label = {}
        for g, x in pool:
            per_label.setdefault(g, []).append(x)
        return sum(sum(xs) / len(xs) for xs in per_label.values()) / len(per_label)

    draws = np.random.default_rng(seed).integers(0, len(videos), size=(resamples, len(videos)))
    samples = [statistic([item for k in row for item in items[videos[k]]]) for row in draws]
    lo, hi = np.percentile(samples, [2.5, 97.5])
    return statistic(list(zip(labels, values, strict=True))), lo, hi


def synthetic(seed=1, videos=12):
    rng = np.random.default_rng(seed)
    clusters, values, labels = [], [], []
    for v in range(videos):
        for _ in range(rng.integers(1, 6)):
            clusters.append(f"v{v}")
            values.append(float(rng.random() < 0.3 + 0.04 * v))
            labels.append(f"task{v % 3}")
    return clusters, values, labels


def test_cluster_bootstrap_matches_the_slow_reference():
    clusters, values, labels = synthetic()
    fast = stats.cluster_bootstrap(clusters, values, resamples=300)
    assert (fast.value, fast.lo, fast.hi) == pytest.approx(slow_bootstrap(clusters, values, resamples=300))
    assert fast.n == len(values) and fast.clusters == 12
    assert fast.lo <= fast.value <= fast.hi


def test_macro_average_matches_the_slow_reference_and_weights_tasks_equally():
    clusters, values, labels = synthetic(seed=2)
    fast = stats.cluster_bootstrap(clusters, values, labels, resamples=300)
    assert (fast.value, fast.lo, fast.hi) == pytest.approx(
        slow_bootstrap(clusters, values, labels, resamples=300)
    )
    # one large easy task and one small hard task: M-Avg is the mean of the two, not the pooled accuracy
    macro = stats.cluster_bootstrap(["a"] * 9 + ["b"], [1.0] * 9 + [0.0], ["easy"] * 9 + ["hard"])
    assert macro.value == pytest.approx(0.5)


def test_interval_is_fixed_by_the_seed_and_spans_only_between_video_variation():
    clusters, values, _ = synthetic(seed=3)
    assert stats.cluster_bootstrap(clusters, values) == stats.cluster_bootstrap(clusters, values)
    # every video with the same accuracy: resampling videos cannot move it
    same = stats.cluster_bootstrap(["a", "a", "b", "b", "c", "c"], [1, 0, 0, 1, 1, 0])
    assert (same.lo, same.value, same.hi) == (0.5, 0.5, 0.5)
    assert stats.cluster_bootstrap([], []) is None


def test_more_videos_give_a_narrower_interval():
    small = stats.cluster_bootstrap(*synthetic(seed=4, videos=8)[:2])
    large = stats.cluster_bootstrap(*synthetic(seed=4, videos=200)[:2])
    assert large.hi - large.lo < small.hi - small.lo
