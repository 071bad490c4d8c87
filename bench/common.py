"""What every benchmark shares: arguments, machine details, generated videos, timing, one JSON line, results.

Each benchmark measures its ratio side by side in one run (ours / the alternative, interleaved over rounds,
medians reported) and prints ONE JSON line with ``--json``; unless ``--no-save`` it also appends that line
to ``bench/results/<benchmark>-<YYYY-MM-DD>.jsonl``, with the machine it came from.

Threads: ``--threads`` (default 1) sets torch's intra-op threads. On the 2-core machines this project is
measured on, other processes usually hold a core; with 2 OpenMP threads every small op then waits for a
descheduled thread, which made the tiny-model runs 5-15x slower and noisy (measured: a five-method comparison
took 0.5 s with one thread, 2-7 s with two under load). One thread measures the work, not the contention;
the value used is recorded in ``machine``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # ``python bench/x.py`` runs with bench/ as the first path entry
    sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

import torch  # noqa: E402

from pipeline.accounting import rss_bytes  # noqa: E402

OUT = ROOT / "bench" / "out"  # generated videos and plots (ignored by git)
RESULTS = ROOT / "bench" / "results"  # kept results (committed)
MB = 1 << 20


# --- arguments ------------------------------------------------------------------------------------------


def parser(doc: str) -> argparse.ArgumentParser:
    """An argument parser with the options every benchmark takes."""
    p = argparse.ArgumentParser(
        description=doc.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter
    )
    p.add_argument("--json", action="store_true", help="print one JSON line (else a short summary)")
    p.add_argument(
        "--threads", type=int, default=1, help="torch intra-op threads (default 1; see bench/common.py)"
    )
    p.add_argument("--no-save", action="store_true", help="do not append the result to bench/results/")
    p.add_argument("--results", type=Path, default=RESULTS, help="folder for the results files")
    p.add_argument("--out", type=Path, default=OUT, help="folder for generated videos and plots (bench/out)")
    return p


def add_comparison_args(p: argparse.ArgumentParser) -> None:
    """The options of the benchmarks that run whole comparisons (compare, followup) on one video."""
    p.add_argument("--video", type=Path, help="use this video instead of the generated one")
    p.add_argument("--minutes", type=float, default=5.0, help="length of the generated video (default 5)")
    p.add_argument("--repeats", type=int, default=3, help="interleaved rounds; medians are reported")
    p.add_argument("--max-frames", type=int, default=32, help="frames sampled (default 32, the tiny default)")
    p.add_argument("--max-new-tokens", type=int, default=64, help="answer length (default 64, the app's)")
    p.add_argument("--budget", type=int, default=None, help="token budget (default: the backbone's, 64)")


def setup(args: argparse.Namespace) -> None:
    """Apply the options every benchmark shares (threads) before any work."""
    if args.threads < 1:
        raise SystemExit(f"--threads must be at least 1, got {args.threads}")
    torch.set_num_threads(args.threads)


# --- the machine ----------------------------------------------------------------------------------------


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def memory_gib() -> float | None:
    try:
        with open("/proc/meminfo") as f:
            kib = int(next(line for line in f if line.startswith("MemTotal")).split()[1])
        return round(kib / 2**20, 1)
    except (OSError, StopIteration, ValueError):
        return None


def machine(device: str | torch.device = "cpu") -> dict:
    """Where a result came from: CPU, cores, memory, load, library versions, device (and GPU details)."""
    import transformers

    info = {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "memory_gib": memory_gib(),
        "load_avg_1m": round(os.getloadavg()[0], 2),
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "platform": platform.platform(),
        "device": str(device),
    }
    if torch.device(device).type == "cuda" and torch.cuda.is_available():
        props = torch.cuda.get_device_properties(torch.device(device))
        info.update(
            gpu=props.name, gpu_memory_gib=round(props.total_memory / 2**30, 1), cuda=torch.version.cuda
        )
    return info


def git_commit() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, timeout=5
        )
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


# --- generated videos -----------------------------------------------------------------------------------


def generated_video(
    seconds: float, *, size: tuple[int, int], fps: float, gop: int | None = None, folder: Path = OUT
) -> Path:
    """A ``testsrc2`` H.264 video (moving pattern, a running clock), made once with the bundled ffmpeg and
    kept in ``folder`` (bench/out/); ``gop`` frames between keyframes (default: one per 2 s)."""
    import imageio_ffmpeg

    import media

    width, height = size
    path = folder / f"testsrc2_{seconds:g}s_{width}x{height}_{fps:g}fps.mp4"
    if path.exists():
        try:
            if media.probe(path).duration >= seconds - 1:
                return path
        except media.VideoError:
            pass
    folder.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".partial.mp4")
    gop = gop or max(1, round(2 * fps))
    command = [
        imageio_ffmpeg.get_ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-y",
        "-f", "lavfi", "-i", f"testsrc2=size={width}x{height}:rate={fps:g}:duration={seconds:g}",
        "-c:v", "libx264", "-preset", "veryfast", "-g", str(gop), "-pix_fmt", "yuv420p",
        "-movflags", "+faststart", str(partial),
    ]  # fmt: skip
    subprocess.run(command, check=True)
    partial.replace(path)
    return path


# --- timing and memory ----------------------------------------------------------------------------------


def timed(fn: Callable, *args, **kwargs) -> tuple[float, object]:
    """(seconds, result) of ``fn(*args, **kwargs)``, wall clock."""
    start = time.perf_counter()
    result = fn(*args, **kwargs)
    return time.perf_counter() - start, result


def median(values: list[float]) -> float:
    return statistics.median(values)


class PeakRSS:
    """Peak resident memory of this process above its level at the start, sampled every ``interval`` s.

    CPU memory has no allocator counter like CUDA's ``max_memory_allocated``; a sampling thread sees every
    peak that lasts longer than the interval (large tensors are mmap'ed and given back when freed).
    """

    def __init__(self, interval: float = 0.002) -> None:
        self.interval = interval
        self.start = self.peak = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> PeakRSS:
        self.start = self.peak = rss_bytes()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()
        return self

    def _watch(self) -> None:
        while not self._stop.wait(self.interval):
            self.peak = max(self.peak, rss_bytes())

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, rss_bytes())

    @property
    def delta_mb(self) -> float:
        return round((self.peak - self.start) / MB, 1)


@contextmanager
def cuda_peak(device: torch.device) -> Iterator[dict]:
    """``{"peak_mb": ...}`` filled on exit: CUDA's peak allocated memory during the block."""
    out: dict = {}
    torch.cuda.synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    try:
        yield out
    finally:
        torch.cuda.synchronize(device)
        out["peak_mb"] = round(torch.cuda.max_memory_allocated(device) / MB, 1)


# --- the pipeline ---------------------------------------------------------------------------------------


def run_comparison(source, question: str, settings) -> tuple[float, object]:
    """(seconds, Finished) of one whole ``pipeline.compare.compare`` request, events drained."""
    from pipeline.compare import compare
    from pipeline.events import Finished
    from pipeline.request import Request

    def drain():
        finished = None
        for event in compare(Request(source, question, settings)):
            if isinstance(event, Finished):
                finished = event
        return finished

    return timed(drain)


def answers(finished) -> dict[str, str]:
    return {m: r.answer for m, r in finished.reports.items()}


def errors(finished) -> dict[str, str]:
    return {m: r.error for m, r in finished.reports.items() if r.error}


def stage_times(finished) -> dict:
    """Shared stages and each method's compress/answer seconds of one request (rounded)."""
    shared = {k: round(v, 4) for k, v in finished.shared_timings.items()}
    methods = {
        m: {k: round(v, 4) for k, v in r.timings.items() if k in ("compress", "answer") and v is not None}
        for m, r in finished.reports.items()
    }
    return {"shared": shared, "methods": methods}


# --- output ---------------------------------------------------------------------------------------------


def record(benchmark: str, result: dict, *, device: str | torch.device = "cpu") -> dict:
    """``result`` with the benchmark's name, date, commit and machine in front."""
    now = datetime.datetime.now(datetime.UTC)
    head = {
        "benchmark": benchmark,
        "date": now.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "commit": git_commit(),
        "machine": machine(device),
    }
    return head | result


def emit(line: dict, args: argparse.Namespace, summary: Callable[[dict], str]) -> None:
    """Print the JSON line (``--json``) or ``summary(line)``; append it to the results unless ``--no-save``."""
    text = json.dumps(line, sort_keys=False)
    print(text if args.json else summary(line), flush=True)
    if not args.no_save:
        args.results.mkdir(parents=True, exist_ok=True)
        with open(args.results / f"{line['benchmark']}-{line['date'][:10]}.jsonl", "a") as f:
            f.write(text + "\n")


def goal(value: float, limit: float) -> dict:
    """``{"goal": "<= limit", "goal_met": value <= limit}``."""
    return {"goal": f"<= {limit}", "goal_met": bool(value <= limit)}
