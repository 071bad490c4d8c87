"""evaluation.run and ``cli.py eval``: outputs, failures, resume, --limit, and 1 vs 2 processes.

Most tests swap the pipeline call (``evaluation.adapter.answer_video``) for a scripted one, so they check the
machinery (records, keys, summaries, retries) in milliseconds; the tiny backbone answers noise, so the
end-to-end tests check what must hold whatever it answers.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import cli
import evaluation
import media
from evaluation import adapter, benchmarks, distributed, runner, store
from evaluation.runner import EvalConfig, make_plan
from tests.videos import make_clip, write_garbage

ROOT = Path(__file__).resolve().parents[1]
TIMINGS = ("timings",)


def write_bench(
    folder: Path, videos: dict[str, float], *, per_video: int = 2, extra: list[dict] = ()
) -> Path:
    """A jsonl benchmark with ``per_video`` questions on each clip (made ``seconds`` long) plus ``extra``."""
    rows = []
    for name, seconds in videos.items():
        if seconds:
            make_clip(folder / name, seconds, fps=4, size=(64, 48))
        for k in range(per_video):
            rows.append({
                "qid": f"{Path(name).stem}-{k}", "video": name, "question": f"Question {k} about {name}?",
                "options": ["red", "green", "blue", "white"], "answer": "ABCD"[k % 4],
                "groups": {"duration": "long" if seconds > 3 else "short"},
            })  # fmt: skip
    rows += list(extra)
    path = folder / "bench.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


class Scripted:
    """Stands in for ``adapter.answer_video``: reads the video like the pipeline (a missing or broken one
    raises VideoError), then in every (question, budget) cell every method answers
    ``reply(prompt, method, budget)`` and keeps the frames ``keep(method, budget)`` picks from 8 sampled at
    0.5 s, 1.5 s, ...; keeps the requests (one per video), their asks and the cells they asked for."""

    def __init__(self, reply=lambda prompt, method, budget: "B", keep=lambda method, budget: [0, 4]) -> None:
        self.reply, self.keep, self.requests, self.calls, self.asks = reply, keep, [], [], []

    def __call__(self, video, asks, budgets, settings, limits) -> dict[tuple[int, int], adapter.Answers]:
        media.probe(video)
        self.requests.append(Path(video).name)
        sampled = [k + 0.5 for k in range(8)]
        answers = {}
        self.asks += asks
        for i, ask in enumerate(asks):
            for b in budgets:
                self.calls.append((Path(video).name, ask.prompt, settings.methods, b))
                methods = {
                    m: adapter.MethodAnswer(
                        method=m, output=self.reply(ask.prompt, m, b), error=None, tokens_llm=b, tokens_raw=999,
                        kept_times=[sampled[k] for k in self.keep(m, b)], timings={"answer": 0.01},
                    )
                    for m in settings.methods
                }  # fmt: skip
                answers[(i, b)] = adapter.Answers(sampled, methods)
        return answers


@pytest.fixture
def scripted(monkeypatch):
    fake = Scripted()
    monkeypatch.setattr(adapter, "answer_video", fake)
    return fake


def config(data: Path, out: Path, **overrides) -> EvalConfig:
    values = {
        "data": data,
        "layout": "jsonl",
        "out": out,
        "methods": ("espresso", "uniform"),
        "budgets": (16, 32),
    }
    return EvalConfig(**(values | overrides))


def predictions(out: Path, drop=TIMINGS) -> list[dict]:
    rows = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if k not in drop} for r in rows]


# --- outputs, with the pipeline scripted ---------------------------------------------------------------


def test_every_question_method_and_budget_gets_one_record_in_plan_order(tmp_path, scripted):
    data = write_bench(tmp_path, {"a.mp4": 2, "b.mp4": 4})
    summary = evaluation.run(config(data, tmp_path / "out"))
    rows = predictions(tmp_path / "out")
    plan = make_plan(config(data, tmp_path / "out"))
    assert [r["key"] for r in rows] == plan.keys() and len(rows) == 4 * 2 * 2
    assert [(r["qid"], r["method"], r["budget"]) for r in rows[:4]] == [
        ("a-0", "espresso", 16), ("a-0", "espresso", 32), ("a-0", "uniform", 16), ("a-0", "uniform", 32),
    ]  # fmt: skip
    # one pipeline request per video, with every question, budget and method at once
    assert scripted.requests == ["a.mp4", "b.mp4"]
    assert [(c[0], c[2], c[3]) for c in scripted.calls[:2]] == [
        ("a.mp4", ("espresso", "uniform"), 16), ("a.mp4", ("espresso", "uniform"), 32),
    ]  # fmt: skip
    assert len(scripted.calls) == 4 * 2
    for r in rows:
        assert r["pred"] == "B" and r["parse"] == "letter" and r["correct"] == (r["gold"] == "B")
        assert r["error"] is None and r["tokens_llm"] == r["budget"] and r["kept_frames"] == [0.5, 4.5]
    # the summary counts what the records say: gold B on one question of each video (k = 1)
    results = {(r["method"], r["budget"]): r for r in summary["results"]}
    assert set(results) == {(m, b) for m in ("espresso", "uniform") for b in (16, 32)}
    assert all(r["accuracy"] == 0.5 and r["n"] == 4 and r["n_videos"] == 2 for r in results.values())
    assert {p["method"] for p in summary["paired"]} == {"espresso"}
    assert all(p["difference"] == 0 for p in summary["paired"])
    groups = {(g["label"], g["method"], g["budget"]): g["n"] for g in summary["groups"]}
    assert groups[("short", "uniform", 16)] == 2 and groups[("long", "uniform", 16)] == 2


def test_the_prompt_lists_the_options_and_the_summary_files_read_back(tmp_path, scripted):
    data = write_bench(tmp_path, {"a.mp4": 2}, per_video=1)
    evaluation.run(config(data, tmp_path / "out", budgets=(16,)))
    assert scripted.calls[0][1] == (
        "Question: Question 0 about a.mp4?\nOptions:\nA. red\nB. green\nC. blue\nD. white\n"
        "Answer with the option letter only."
    )
    record = predictions(tmp_path / "out")[0]
    assert record["prompt"] == scripted.calls[0][1] and record["options"] == ["red", "green", "blue", "white"]
    assert record["question"] == "Question 0 about a.mp4?"
    results = evaluation.load_results(tmp_path / "out")
    assert results.summary["benchmark"]["sha256"] == benchmarks.file_hash(data)
    assert results.card["benchmark"]["sha256"] == benchmarks.file_hash(data)
    assert results.card["world_size"] == 1 and results.card["prompt"]["parser_version"] == 1
    assert results.card["backbone"]["name"] == "tiny-random" and "torch" in results.card["libraries"]
    assert results.card["settings"]["budgets"] == [16] and results.card["settings"]["max_new_tokens"] == 16
    assert len(results.predictions) == 2
    assert evaluation.find_results(tmp_path) == [tmp_path / "out"]
    table = (tmp_path / "out" / "summary.md").read_text()
    assert "| espresso | 16 | 0.0 |" in table and "| uniform | 16 | 0.0 |" in table
    with pytest.raises(evaluation.ResultsError, match="no finished evaluation"):
        evaluation.load_results(tmp_path)


def test_a_missing_or_broken_video_is_a_recorded_failure_and_the_run_goes_on(tmp_path, scripted):
    write_garbage(tmp_path / "broken.mp4")
    data = write_bench(tmp_path, {"a.mp4": 2, "missing.mp4": 0, "broken.mp4": 0})
    summary = evaluation.run(config(data, tmp_path / "out"))
    rows = predictions(tmp_path / "out")
    assert len(rows) == 6 * 2 * 2
    failed = [r for r in rows if r["error"]]
    assert {r["video"] for r in failed} == {"missing.mp4", "broken.mp4"} and len(failed) == 4 * 2 * 2
    assert all(r["stage"] == "video" and r["pred"] is None and not r["correct"] for r in failed)
    assert all(r["error"] is None for r in rows if r["video"] == "a.mp4")
    assert {r["n_failed"] for r in summary["results"]} == {4}
    assert len(scripted.calls) == 2 * 2  # the unreadable videos never reached the pipeline


def test_a_method_failure_is_a_result_and_a_video_failure_is_retried(tmp_path, monkeypatch):
    data = write_bench(tmp_path, {"a.mp4": 2, "late.mp4": 0}, per_video=1)
    fake = Scripted()

    def failing_espresso(video, asks, budgets, settings, limits):
        answers = fake(video, asks, budgets, settings, limits)
        for cell in answers.values():
            if "espresso" in cell.methods:
                cell.methods["espresso"].error = "A budget of 16 visual tokens is too small for espresso."
        return answers

    monkeypatch.setattr(adapter, "answer_video", failing_espresso)
    out = tmp_path / "out"
    evaluation.run(config(data, out, budgets=(16,)))
    espresso = next(r for r in predictions(out) if r["method"] == "espresso" and r["video"] == "a.mp4")
    assert espresso["stage"] == "method" and espresso["parse"] == "failed" and espresso["pred"] is None
    make_clip(tmp_path / "late.mp4", 2, fps=4, size=(64, 48))  # the user adds the missing video
    fake.calls.clear()
    evaluation.run(config(data, out, budgets=(16,)))
    assert [c[0] for c in fake.calls] == ["late.mp4"]  # only the video failure is tried again
    rows = predictions(out)
    assert len(rows) == 4 and [r["error"] is None for r in rows if r["video"] == "late.mp4"] == [False, True]


def test_a_rerun_skips_what_is_done_and_limit_takes_the_first_questions(tmp_path, scripted):
    data = write_bench(tmp_path, {"a.mp4": 2, "b.mp4": 2})
    out = tmp_path / "out"
    evaluation.run(config(data, out, limit=3))
    assert [r["qid"] for r in predictions(out)][::4] == ["a-0", "a-1", "b-0"]
    scripted.calls.clear()
    evaluation.run(config(data, out))
    assert [(c[0], c[3]) for c in scripted.calls] == [("b.mp4", 16), ("b.mp4", 32)]  # only b-1 was left
    full = predictions(out)
    scripted.calls.clear()
    evaluation.run(config(data, out))
    assert scripted.calls == [] and predictions(out) == full and len(full) == len({r["key"] for r in full})
    # a new budget or a changed benchmark file makes new keys
    evaluation.run(config(data, out, budgets=(16, 32, 48)))
    assert [c[3] for c in scripted.calls] == [48] * 4
    data.write_text(data.read_text().replace("Question 0", "Question zero"))
    scripted.calls.clear()
    evaluation.run(config(data, out))
    assert len(scripted.calls) == 4 * 2


def test_a_torn_last_line_is_skipped_and_the_next_append_starts_a_new_line(tmp_path):
    with store.PartWriter(tmp_path, 0) as writer:
        writer.write({"key": "k1", "error": None})
    part = tmp_path / "parts" / "rank-0.jsonl"
    part.write_text(part.read_text() + '{"key": "k2", "err')  # killed mid-write
    assert store.done_keys(tmp_path) == {"k1"}
    with store.PartWriter(tmp_path, 0) as writer:
        writer.write({"key": "k2", "error": None})
    assert store.done_keys(tmp_path) == {"k1", "k2"}


def test_needle_span_accounting_follows_the_kept_and_sampled_frames(tmp_path, monkeypatch):
    # sampled at 0.5, 1.5, ...; the needle covers [2.0, 3.2): only the frame at 2.5 is inside
    needle = {"qid": "n", "video": "a.mp4", "question": "Which word?", "options": ["x", "y"], "answer": "A",
              "needle": {"start": 2.0, "end": 3.2}}  # fmt: skip
    data = write_bench(tmp_path, {"a.mp4": 2}, per_video=0, extra=[needle])
    fake = Scripted(keep=lambda method, budget: [2] if method == "espresso" else [0, 3])
    monkeypatch.setattr(adapter, "answer_video", fake)
    summary = evaluation.run(config(data, tmp_path / "out", budgets=(16,)))
    rows = {r["method"]: r for r in predictions(tmp_path / "out")}
    assert rows["espresso"]["needle"] == {"start": 2.0, "end": 3.2, "sampled": True, "kept": True}
    assert rows["uniform"]["needle"]["kept"] is False
    needle_rates = {r["method"]: r["needle"]["kept"] for r in summary["results"]}
    assert needle_rates == {"espresso": 1.0, "uniform": 0.0}


# --- arguments ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--format", "nope"], "invalid choice: 'nope'"),
        (["--budgets", "64,0"], "expected a positive number, got '0'"),
        (["--methods", "espresso,magic"], "Unknown method magic"),
        (["--data", "{missing}"], "does not exist"),
        (["--video-root", "{missing}"], "is not a folder"),
        (["--backbone", "gpt"], "Unknown backbone 'gpt'"),
    ],
)
def test_bad_arguments_end_in_one_sentence_and_exit_2(tmp_path, capsys, args, words):
    data = write_bench(tmp_path, {"a.mp4": 0}, per_video=1)
    base = {"--data": str(data), "--format": "jsonl", "--out": str(tmp_path / "out"), "--budgets": "16"}
    given = dict(zip(args[::2], [a.format(missing=tmp_path / "missing") for a in args[1::2]], strict=True))
    argv = ["eval", *[x for kv in (base | given).items() for x in kv]]
    try:
        code = cli.main(argv)
    except SystemExit as exit_:  # argparse's own refusal
        code = exit_.code
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and words in err[0], err
    assert not (tmp_path / "out" / "predictions.jsonl").exists()


# --- end to end on the tiny backbone ------------------------------------------------------------------


def run_cli(*args, launcher=(sys.executable,), **kwargs) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([*launcher, "cli.py", *map(str, args)], cwd=ROOT, env=env, text=True, **kwargs)


@pytest.fixture(scope="module")
def tiny_bench(tmp_path_factory):
    """Three clips of different lengths, two questions each, and a one-process run of it (in this process,
    on one thread like the launched processes)."""
    folder = tmp_path_factory.mktemp("tiny_bench")
    data = write_bench(folder, {"short.mp4": 2, "long.mp4": 6, "mid.mp4": 4})
    out = folder / "one"
    args = ["eval", "--data", data, "--format", "jsonl", "--methods", "tempo,uniform", "--budgets", "16",
            "--max-frames", "4", "--fps", "1"]  # fmt: skip
    threads, printed = torch.get_num_threads(), io.StringIO()
    torch.set_num_threads(1)
    try:
        with contextlib.redirect_stdout(printed):
            assert cli.main([*map(str, args), "--out", str(out)]) == 0
    finally:
        torch.set_num_threads(threads)
    return data, args, out, json.loads(printed.getvalue())


def test_tiny_backbone_end_to_end_records_what_must_hold_whatever_it_answers(tiny_bench):
    data, _, out, printed = tiny_bench
    rows = predictions(out, drop=())
    assert len(rows) == 6 * 2 and printed["out"] == str(out)
    assert {(r["method"], r["budget"]) for r in printed["results"]} == {("tempo", 16), ("uniform", 16)}
    questions = {q.qid: q for q in benchmarks.read(data, "jsonl")}
    for r in rows:
        assert r["error"] is None and r["tokens_llm"] <= 16
        assert (r["pred"], r["parse"]) == evaluation.prompts.parse_answer(r["output"], questions[r["qid"]])
        assert r["correct"] == (r["pred"] == r["gold"])
        assert r["kept_frames"] == sorted(r["kept_frames"]) and r["timings"]["call"] > 0
    summary = json.loads((out / "summary.json").read_text())
    for result in summary["results"]:
        mine = [r for r in rows if (r["method"], r["budget"]) == (result["method"], result["budget"])]
        assert result["accuracy"] == pytest.approx(sum(r["correct"] for r in mine) / len(mine), abs=1e-4)
        assert result["n_unparsed"] == sum(r["parse"] == "unparsed" for r in mine)


LAUNCHERS = {
    "torchrun": ("-m", "torch.distributed.run", "--nproc_per_node", "2"),
    "accelerate": ("-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2", "--num_machines",
                   "1", "--mixed_precision", "no", "--dynamo_backend", "no"),
}  # fmt: skip


@pytest.mark.parametrize("launcher", list(LAUNCHERS))
def test_two_processes_write_the_same_predictions_as_one(tiny_bench, tmp_path, launcher):
    _, args, one, _ = tiny_bench
    launcher = (sys.executable, *LAUNCHERS[launcher])
    process = run_cli(
        *args, "--out", tmp_path, launcher=launcher, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    _, stderr = process.communicate(timeout=300)
    assert process.returncode == 0, stderr
    assert predictions(tmp_path) == predictions(one)
    assert json.loads((tmp_path / "eval_card.json").read_text())["world_size"] == 2
    # a video's questions stay in one process; the longest video went first, to rank 0
    parts = [[json.loads(x)["video"] for x in (tmp_path / "parts" / f"rank-{r}.jsonl").read_text().splitlines()]
             for r in (0, 1)]  # fmt: skip
    assert parts[0][0] == "long.mp4" and set(parts[0]).isdisjoint(parts[1])
    assert sorted(set(parts[0]) | set(parts[1])) == ["long.mp4", "mid.mp4", "short.mp4"]


def test_a_killed_run_resumes_without_duplicates(tiny_bench, tmp_path, monkeypatch):
    _, args, one, _ = tiny_bench
    process = run_cli(*args, "--out", tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    part = tmp_path / "parts" / "rank-0.jsonl"
    deadline = time.monotonic() + 120
    while not (part.exists() and part.read_text().count("\n") >= 3) and time.monotonic() < deadline:
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)
    records = list(store.read_records(tmp_path))
    written = {r["key"] for r in records}
    assert 3 <= len(written) < 12 and not (tmp_path / "summary.json").exists()
    # a video's records are written together once its request ends: a complete video is never asked again
    complete = {v for v in {r["video"] for r in records} if sum(r["video"] == v for r in records) == 4}
    calls = []
    answer = adapter.answer_video

    def counted(video, asks, budgets, settings, limits):
        calls.append((Path(video).name, len(asks) * len(budgets) * len(settings.methods)))
        return answer(video, asks, budgets, settings, limits)

    monkeypatch.setattr(adapter, "answer_video", counted)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert cli.main([*map(str, args), "--out", str(tmp_path)]) == 0
    finally:
        torch.set_num_threads(threads)
    assert predictions(tmp_path) == predictions(one)
    assert complete.isdisjoint(v for v, _ in calls) and sum(n for _, n in calls) == 12 - 4 * len(complete)
    keys = [r["key"] for r in parsed_lines(part)]
    assert len(keys) == len(set(keys)) == 12  # every answer appended once, across both runs


def parsed_lines(path: Path) -> list[dict]:
    rows = []
    for line in path.read_text().splitlines():
        with contextlib.suppress(json.JSONDecodeError):  # the line the kill tore
            rows.append(json.loads(line))
    return rows


def test_mlvu_videos_are_looked_up_beside_its_json_folder(tmp_path):
    folder = tmp_path / "MLVU" / "json"
    folder.mkdir(parents=True)
    row = {
        "video": "m.mp4",
        "question": "Q?",
        "candidates": ["x", "y"],
        "answer": "y",
        "question_type": "plotQA",
    }
    (folder / "1_plotQA.json").write_text(json.dumps([row]))
    for data in (tmp_path / "MLVU", folder, folder / "1_plotQA.json"):
        plan = make_plan(EvalConfig(data=data, layout="mlvu", out=tmp_path / "out"))
        assert plan.video_root == tmp_path / "MLVU"
        assert list(plan.videos()) == [tmp_path / "MLVU" / "m.mp4"]  # missing: the plain path, to fail on


def test_videos_go_longest_first_to_the_least_loaded_process():
    videos = [("a", 10.0), ("b", 60.0), ("c", 30.0), ("d", 25.0), ("e", 5.0)]
    assert distributed.assign(videos, 2) == [["b", "e"], ["c", "d", "a"]]
    assert distributed.assign(videos, 1) == [["b", "c", "d", "a", "e"]]
    # unknown lengths (0 s) are dealt out in file order, one each
    assert distributed.assign([(n, 0.0) for n in "abcde"], 2) == [["a", "c", "e"], ["b", "d"]]


def test_mlvu_summary_reports_m_avg_as_the_mean_of_its_task_accuracies(tmp_path, monkeypatch):
    folder = tmp_path / "MLVU" / "json"
    folder.mkdir(parents=True)
    tasks = {"1_plotQA": ["p1.mp4", "p2.mp4", "p3.mp4"], "4_count": ["c1.mp4"]}
    for task, videos in tasks.items():
        (tmp_path / "MLVU" / "video" / task).mkdir(parents=True)
        for v in videos:
            make_clip(tmp_path / "MLVU" / "video" / task / v, 1, fps=4, size=(32, 32))
        rows = [{"video": v, "question": f"{task}?", "candidates": ["x", "y"], "answer": "y",
                 "question_type": task.split("_")[1]} for v in videos]  # fmt: skip
        (folder / f"{task}.json").write_text(json.dumps(rows))
    # right on every plotQA question, wrong on the one count question: pooled 3/4, M-Avg (1 + 0) / 2
    fake = Scripted(reply=lambda prompt, method, budget: "B" if "plotQA" in prompt else "A")
    monkeypatch.setattr(adapter, "answer_video", fake)
    summary = evaluation.run(config(tmp_path / "MLVU", tmp_path / "out", layout="mlvu", budgets=(16,)))
    accuracy = {r["method"]: r["accuracy"] for r in summary["results"]}
    m_avg = {a["method"]: a["value"] for a in summary["aggregates"]}
    assert accuracy == {"espresso": 0.75, "uniform": 0.75} and m_avg == {"espresso": 0.5, "uniform": 0.5}
    assert {a["name"] for a in summary["aggregates"]} == {"M-Avg"}
    tasks_rows = {(g["label"], g["method"]): g["accuracy"] for g in summary["groups"]}
    assert tasks_rows[("plotQA", "uniform")] == 1.0 and tasks_rows[("count", "uniform")] == 0.0
    assert "## M-Avg (mean over question_type)" in (tmp_path / "out" / "summary.md").read_text()


def test_span_membership_survives_millisecond_rounding_at_30_fps():
    # frames k / 30 s; the needle is frames 721..780 of a 30 fps video; timestamps rounded as the pipeline does
    span = (round(721 / 30, 4), round(781 / 30, 4))
    frame = {k: round(k / 30, 3) for k in (720, 721, 780, 781)}
    assert frame[721] < span[0]  # rounding put the first needle frame 0.3 ms before the span's start
    assert runner.in_span([frame[721]], span) and runner.in_span([frame[780]], span)
    assert not runner.in_span([frame[720], frame[781]], span)
    assert runner.in_span(None, span) is None
