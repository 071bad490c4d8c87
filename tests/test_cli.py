"""cli.py: JSON on stdout; a user error is one plain line on stderr with exit code 2, never a traceback."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import cli
import media
from tests.videos import read_index

ROOT = Path(__file__).resolve().parents[1]


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "cli.py", *map(str, args)], cwd=ROOT, capture_output=True, text=True, timeout=120
    )


def assert_user_error(result: subprocess.CompletedProcess, words: str) -> None:
    assert result.returncode == 2
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and words in lines[0]
    assert "Traceback" not in result.stderr


def test_probe_prints_the_probe_as_json(test_videos):
    result = run_cli("probe", test_videos["rot90.mp4"])
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data == media.probe(test_videos["rot90.mp4"]).to_dict()
    assert (data["width"], data["height"], data["rotation"]) == (64, 96, 90)


def test_sample_prints_timestamps_and_indices(test_videos, capsys):
    assert cli.main(["sample", str(test_videos["vfr.mp4"]), "--fps", "2", "--max-frames", "5"]) == 0
    data = json.loads(capsys.readouterr().out)
    frames = media.sample(test_videos["vfr.mp4"], fps=2, max_frames=5)
    assert data["indices"] == frames.indices.tolist()
    assert data["timestamps"] == pytest.approx(frames.timestamps.tolist())
    assert data["count"] == 5 and data["size"] == [96, 64]


def test_sample_with_out_writes_numbered_pngs_in_timestamp_order(test_videos, tmp_path):
    out = tmp_path / "frames"
    result = run_cli(
        "sample", test_videos["h264.mp4"], "--fps", "2", "--max-frames", "6", "--max-side", "0", "--out", out
    )
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    files = sorted(out.iterdir())
    assert [f.name for f in files] == [f"frame_{i:05d}.png" for i in range(6)] == data["files"]
    shown = [read_index(np.asarray(Image.open(f).convert("RGB"))) for f in files]
    assert shown == data["indices"] and data["timestamps"] == sorted(data["timestamps"])


def test_missing_video_is_one_line_and_exit_code_2(test_videos):
    assert_user_error(run_cli("probe", test_videos.missing()), "was not found")


def test_garbage_file_is_one_line_and_exit_code_2(test_videos, capsys):
    assert cli.main(["sample", str(test_videos["garbage.mp4"])]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.strip() == media.NotAVideoError().message


@pytest.mark.parametrize(
    "args, words",
    [
        (["sample", "x.mp4", "--fps", "-1"], "positive number"),
        (["sample", "x.mp4", "--max-frames", "many"], "positive number"),
        (["unknown-command"], "invalid choice"),
        ([], "required"),
    ],
)
def test_bad_arguments_are_one_line_and_exit_code_2(args, words):
    assert_user_error(run_cli(*args), words)


def test_unwritable_out_folder_is_a_user_error(test_videos, tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("in the way")
    assert cli.main(["sample", str(test_videos["h264.mp4"]), "--out", str(blocker / "frames")]) == 2
    assert "choose another --out folder" in capsys.readouterr().err


@pytest.mark.network
def test_fetch_into_a_path_that_is_a_file_is_a_user_error(video_server, tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("in the way")
    assert cli.main(["fetch", video_server.url("clip.mp4"), "--out", str(blocker), "--allow-private"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "check the paths given" in err[0]


def test_a_new_command_is_one_function_and_one_registration(monkeypatch, capsys):
    def add_hello(commands):
        commands.add_parser("hello").set_defaults(run=lambda args: {"hello": "world"})

    monkeypatch.setattr(cli, "COMMANDS", [*cli.COMMANDS, add_hello])
    assert cli.main(["hello"]) == 0
    assert json.loads(capsys.readouterr().out) == {"hello": "world"}


@pytest.mark.network
def test_fetch_saves_the_video_and_prints_its_path_and_probe(video_server, tmp_path):
    result = run_cli("fetch", video_server.url("clip.mp4"), "--out", tmp_path, "--allow-private")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert Path(data["path"]).parent == tmp_path and Path(data["path"]).is_file()
    assert data["info"]["frame_count"] == 40 and data["info"]["path"] == data["path"]
    assert [p.name for p in tmp_path.iterdir()] == [Path(data["path"]).name]  # no temp folder left


@pytest.mark.network
def test_fetch_refuses_a_private_address_without_the_flag(video_server, tmp_path):
    assert_user_error(run_cli("fetch", video_server.url("clip.mp4"), "--out", tmp_path), "private")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.network
def test_fetch_over_the_duration_cap_is_a_user_error(video_server, tmp_path):
    result = run_cli(
        "fetch", video_server.url("long.mp4"), "--out", tmp_path, "--allow-private", "--max-duration", "5"
    )
    assert_user_error(result, "limit")
    assert list(tmp_path.iterdir()) == []
