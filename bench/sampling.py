"""Benchmark: our sampler against decoding every frame, side by side in one run.

    python bench/sampling.py --json

On a generated 10-minute 640x360 H.264 video (30 fps, x264 veryfast, default keyframe interval; cached in
bench/out/), times `media.sample` for 64 frames and for 1 fps (600 frames), and a plain PyAV decode of
every frame (same threading, no conversion), interleaved over --repeats rounds; reports medians and
ratios ours / full decode. Goals: 64 frames <= 0.2, 1 fps <= 1.0. Prints ONE JSON line with --json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import av
import imageio_ffmpeg

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import media  # noqa: E402

CACHE = Path(__file__).resolve().parent / "out" / "sampling_10min_640x360.mp4"
GOALS = {"sample_64": 0.2, "sample_1fps": 1.0}


def make_video(path: Path) -> Path:
    """Generate the 10-minute test video once (about 30 s on 2 cores) and reuse it."""
    if path.exists():
        try:
            if media.probe(path).duration >= 599:
                return path
        except media.VideoError:
            pass
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".partial.mp4")
    command = [
        imageio_ffmpeg.get_ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-y",
        "-f", "lavfi", "-i", "testsrc2=size=640x360:rate=30:duration=600",
        "-c:v", "libx264", "-preset", "veryfast", "-pix_fmt", "yuv420p", "-movflags", "+faststart",
        str(partial),
    ]  # fmt: skip
    subprocess.run(command, check=True)
    partial.replace(path)
    return path


def full_decode(path: Path) -> int:
    """The alternative: decode every frame (PyAV, automatic threading, as our sampler uses)."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        return sum(1 for _ in container.decode(stream))


def timed(fn, *args, **kwargs) -> tuple[float, object]:
    started = time.perf_counter()
    result = fn(*args, **kwargs)
    return time.perf_counter() - started, result


def machine() -> dict:
    model = ""
    with open("/proc/cpuinfo") as f:
        model = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), "")
    return {
        "cpu": model or platform.processor(),
        "cores": os.cpu_count(),
        "load_avg_1m": round(os.getloadavg()[0], 2),
        "python": platform.python_version(),
        "pyav": av.__version__,
        "ffmpeg": av.ffmpeg_version_info,
        "platform": platform.platform(),
    }


def run(path: Path, repeats: int) -> dict:
    info = media.probe(path)
    cases = {
        "sample_64": dict(fps=64 / info.duration, max_frames=64),
        "sample_1fps": dict(fps=1.0, max_frames=int(info.duration) + 1),
    }
    times: dict[str, list[float]] = {"full": [], **{name: [] for name in cases}}
    counts = {}
    for _ in range(repeats):  # interleaved, so load changes hit every contender alike
        seconds, counts["full"] = timed(full_decode, path)
        times["full"].append(seconds)
        for name, kwargs in cases.items():
            seconds, frames = timed(media.sample, path, max_side=640, **kwargs)
            times[name].append(seconds)
            counts[name] = len(frames)
    full = statistics.median(times["full"])
    result = {}
    for name in cases:
        ours = statistics.median(times[name])
        result[name] = {
            "ours_s": round(ours, 3),
            "full_decode_s": round(full, 3),
            "ratio": round(ours / full, 3),
            "frames": counts[name],
            "goal_ratio": GOALS[name],
            "runs_s": [round(t, 3) for t in times[name]],
        }
    result["full_decode"] = {"frames": counts["full"], "runs_s": [round(t, 3) for t in times["full"]]}
    result["video"] = {k: v for k, v in info.to_dict().items() if k != "path"}
    result["machine"] = machine()
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", action="store_true", help="print one JSON line")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved rounds; medians are reported")
    parser.add_argument("--video", type=Path, help="use this video instead of the generated one")
    args = parser.parse_args(argv)
    result = run(args.video or make_video(CACHE), max(1, args.repeats))
    if args.json:
        print(json.dumps(result))
    else:
        for name in ("sample_64", "sample_1fps"):
            r = result[name]
            print(
                f"{name}: ours {r['ours_s']} s, full decode {r['full_decode_s']} s, ratio {r['ratio']} (goal <= {r['goal_ratio']})"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
