"""Benchmark: many visitors at once. Concurrent gradio_client sessions against a local app; none is lost.

    python bench/load.py --json                          # 8 clients x 3 requests, queue 16, concurrency 1
    python bench/load.py --json --queue-size 2           # a small queue: some requests are told "busy"
    python bench/load.py --json --url http://HOST:PORT/  # an app that is already running

Without --url the app starts in this process (tiny-random backbone) with the queue size and concurrency
given here. First one client sends --solo requests alone (the baseline latency), then every client opens
its own session, all start together, and each sends its requests one after the other. Every request ends
as exactly one of: completed (status "Done", every chosen column answered, and every file the answer
points to downloaded whole: gallery frames, run card, clips), busy (the queue was full: gradio_client's
QueueError, "Queue is full! Please try again."), failed (any other error, or a returned file that is
missing, truncated or unreadable; its message is kept), or lost (no answer within --timeout). Prints
counts, the files downloaded, p50/p95 latency of completed requests and the ratio p50 under load / p50
alone, with machine details; ONE JSON line with --json. Exit status 1 when a request is lost or failed.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import statistics
import sys
import threading
import time
from concurrent.futures import TimeoutError as FutureTimeout
from contextlib import contextmanager, redirect_stdout
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # the bench talks to 127.0.0.1 only
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import av  # noqa: E402
import httpx  # noqa: E402
import numpy as np  # noqa: E402
from gradio_client import Client, handle_file  # noqa: E402
from gradio_client.utils import QueueError  # noqa: E402

OUT = Path(__file__).resolve().parent / "out"
OUTCOMES = ("completed", "busy", "failed", "lost")


# --- the local app and the clip -------------------------------------------------------------------------


def make_clip(path: Path, *, seconds: int = 4, fps: int = 8, size: tuple[int, int] = (128, 96)) -> Path:
    """A small H.264 clip of moving stripes (made once; a few kB)."""
    if path.exists():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    width, height = size
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=Fraction(fps), options={"preset": "veryfast"})
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for i in range(seconds * fps):
            x = np.arange(width)[None, :, None]
            frame = np.broadcast_to(((x + 4 * i) % 32 < 16) * 200, (height, width, 3)).astype(np.uint8)
            out.mux(stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")))
        out.mux(stream.encode())
    return path


@contextmanager
def local_app(settings=None, *, backbone: str = "tiny-random"):
    """Serve the real app on 127.0.0.1 in this process within ``settings`` (an AppSettings); yields its URL."""
    import socket

    from pipeline.limits import AppSettings

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    # Gradio talks on stdout (building the page's cached examples, the MCP server's address): stdout is for
    # the benchmark's one JSON line
    with redirect_stdout(sys.stderr):
        import app

        demo = app.launch(
            settings or AppSettings(), backbone=backbone, port=port, prevent_thread_lock=True, quiet=True
        )
    try:
        yield f"http://127.0.0.1:{port}/"
    finally:
        with redirect_stdout(sys.stderr):  # Gradio says goodbye on stdout; stdout is for the JSON line
            demo.close()


# --- the visitors ---------------------------------------------------------------------------------------


@dataclass
class Request:
    """What one comparison asks for: tiny settings so the queue, not the model, is what is measured."""

    clip: Path
    methods: tuple[str, ...] = ("uniform", "pool")
    max_frames: int = 8
    max_new_tokens: int = 2
    budget: int = 48

    def args(self) -> list:
        """Positional arguments of the page's Compare event (``/compare_page``, what the browser sends)."""
        from ui.inputs import page_args

        return page_args(
            video=handle_file(str(self.clip)),
            url="",
            question="What moves in the video?",
            methods=list(self.methods),
            budget=self.budget,
            fps=2,
            max_frames=self.max_frames,
            max_new_tokens=self.max_new_tokens,
        )


@dataclass
class Outcome:
    client: int
    kind: str  # one of OUTCOMES
    seconds: float
    message: str = ""
    files: int = 0  # returned files downloaded whole


def returned_files(value) -> list[dict]:
    """Every file a result points to (Gradio's FileData: a dict with a ``url``), in nested lists and dicts."""
    if isinstance(value, dict):
        if isinstance(value.get("url"), str):
            return [value]
        return [f for item in value.values() for f in returned_files(item)]
    if isinstance(value, list | tuple):
        return [f for item in value for f in returned_files(item)]
    return []


def check_file(file: dict, timeout_s: float) -> str:
    """'' when ``file`` downloads whole: status 200, its announced size, an image that decodes, JSON that parses."""
    name = file.get("orig_name") or file["url"].rsplit("/", 1)[-1]
    try:
        response = httpx.get(file["url"], timeout=timeout_s)
    except httpx.HTTPError as err:
        return f"{name}: download failed ({type(err).__name__})"
    data = response.content
    if response.status_code != 200:
        return f"{name}: HTTP {response.status_code}"
    if not data or (file.get("size") is not None and len(data) != file["size"]):
        return f"{name}: {len(data)} bytes, announced {file.get('size')}"
    return _readable(name, data)


def _readable(name: str, data: bytes) -> str:
    """'' when ``data`` reads as what its name says (images decode to the end, JSON parses)."""
    from PIL import Image

    suffix = Path(name.split("?")[0]).suffix.lower()
    try:
        if suffix in (".png", ".jpg", ".jpeg", ".webp", ".gif"):
            Image.open(io.BytesIO(data)).load()
        elif suffix == ".json":
            json.loads(data)
    except (OSError, ValueError, SyntaxError) as err:  # PIL: OSError for truncated data, SyntaxError for junk
        return f"{name}: unreadable ({str(err)[:80]})"
    return ""


def check_files(result, timeout_s: float) -> tuple[str, int]:
    """('', count) when every returned file downloads whole, else (the first problem, count so far)."""
    files = returned_files(result)
    for count, file in enumerate(files):
        problem = check_file(file, timeout_s)
        if problem:
            return problem, count
    return "", len(files)


def check_answer(result: tuple, methods: tuple[str, ...]) -> str:
    """'' when the comparison is complete (status Done, every chosen column answered), else what is missing."""
    from pipeline.columns import COLUMNS
    from ui.updates import page_result

    named = page_result(result, COLUMNS)
    if not str(named["status"]).startswith("Done"):
        return f"status is {str(named['status'])[:80]!r}"
    answers = {m: named[f"{m}.answer"] for m in COLUMNS}
    missing = [m for m in methods if not answers.get(m) or str(answers[m]).startswith("⚠️")]
    return f"no answer from {', '.join(missing)}" if missing else ""


def one_request(client: Client, index: int, request: Request, timeout_s: float) -> Outcome:
    t0 = time.perf_counter()
    job = client.submit(*request.args(), api_name="/compare_page")
    try:
        result = job.result(timeout=timeout_s)
    except QueueError as err:
        return Outcome(index, "busy", time.perf_counter() - t0, str(err))
    except (TimeoutError, FutureTimeout):
        job.cancel()
        return Outcome(index, "lost", time.perf_counter() - t0, f"no answer in {timeout_s:g} s")
    except Exception as err:  # every other ending is counted and its message kept
        return Outcome(index, "failed", time.perf_counter() - t0, f"{type(err).__name__}: {err}")
    problem, files = check_answer(result, request.methods), 0
    if not problem:
        problem, files = check_files(result, timeout_s)
    return Outcome(index, "failed" if problem else "completed", time.perf_counter() - t0, problem, files)


def visitor(url: str, index: int, count: int, request: Request, timeout_s: float, start, outcomes) -> None:
    """One session: connect, wait for the others, then send ``count`` requests one after the other."""
    try:
        client = Client(url, verbose=False, download_files=False)
    except Exception as err:  # a session that cannot connect loses all its requests: count them as failed
        start.wait()
        outcomes.extend(Outcome(index, "failed", 0.0, f"connect: {err}") for _ in range(count))
        return
    start.wait()
    for _ in range(count):
        outcomes.append(one_request(client, index, request, timeout_s))


def run_load(url: str, *, clients: int, requests: int, request: Request, timeout_s: float = 300) -> dict:
    """``clients`` concurrent sessions x ``requests`` each; every request accounted for."""
    outcomes: list[Outcome] = []  # list.append is atomic under the GIL
    start = threading.Barrier(clients)
    threads = [
        threading.Thread(target=visitor, args=(url, i, requests, request, timeout_s, start, outcomes))
        for i in range(clients)
    ]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout_s * requests + 60)
    return summarize(outcomes, sent=clients * requests, wall_s=time.perf_counter() - t0)


def summarize(outcomes: list[Outcome], *, sent: int, wall_s: float) -> dict:
    counts = {kind: sum(o.kind == kind for o in outcomes) for kind in OUTCOMES}
    counts["lost"] += sent - len(outcomes)  # a request with no outcome at all (a thread that hung)
    done = sorted(o.seconds for o in outcomes if o.kind == "completed")
    return {
        "sent": sent,
        **counts,
        "accounted": sum(counts.values()) == sent,
        "files_downloaded": sum(o.files for o in outcomes),
        "p50_s": _percentile(done, 50),
        "p95_s": _percentile(done, 95),
        "wall_s": round(wall_s, 2),
        "busy_messages": sorted({o.message for o in outcomes if o.kind == "busy"}),
        "failures": [o.message for o in outcomes if o.kind in ("failed", "lost")][:10],
    }


def _percentile(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile (None when there is nothing to rank)."""
    if not values:
        return None
    rank = max(1, -(-len(values) * q // 100))
    return round(sorted(values)[int(rank) - 1], 3)


def solo_latency(url: str, request: Request, count: int, timeout_s: float) -> float | None:
    """Median latency of ``count`` requests sent by one client with nobody else around (after one unmeasured
    request that loads the backbone)."""
    client = Client(url, verbose=False, download_files=False)
    one_request(client, 0, request, timeout_s)
    outcomes = [one_request(client, 0, request, timeout_s) for _ in range(count)]
    times = [o.seconds for o in outcomes if o.kind == "completed"]
    return round(statistics.median(times), 3) if times else None


# --- the report -----------------------------------------------------------------------------------------


def machine() -> dict:
    import gradio
    import gradio_client
    import torch

    model = next(
        (
            line.split(":", 1)[1].strip()
            for line in _read("/proc/cpuinfo").splitlines()
            if "model name" in line
        ),
        platform.processor(),
    )
    mem = next((line.split()[1] for line in _read("/proc/meminfo").splitlines() if "MemTotal" in line), "0")
    return {
        "cpu": model,
        "cores": os.cpu_count(),
        "memory_gb": round(int(mem) / 2**20, 1),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "gradio": gradio.__version__,
        "gradio_client": gradio_client.__version__,
    }


def _read(path: str) -> str:
    try:
        return Path(path).read_text()
    except OSError:
        return ""


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--clients", type=int, default=8)
    p.add_argument("--requests", type=int, default=3, help="requests per client, one after the other")
    p.add_argument("--queue-size", type=int, default=16, help="the app's queue size (local app only)")
    p.add_argument("--concurrency", type=int, default=1, help="comparisons at once (local app only)")
    p.add_argument("--url", help="an app already running (its own queue settings apply)")
    p.add_argument("--solo", type=int, default=3, help="requests sent alone first, for the baseline")
    p.add_argument("--max-frames", type=int, default=8)
    p.add_argument("--max-new-tokens", type=int, default=2)
    p.add_argument("--methods", default="uniform,pool")
    p.add_argument("--timeout", type=float, default=300, help="seconds before a request counts as lost")
    p.add_argument("--json", action="store_true", help="print one JSON line")
    args = p.parse_args(argv)
    request = Request(
        make_clip(OUT / "load_clip.mp4"),
        tuple(m.strip() for m in args.methods.split(",") if m.strip()),
        args.max_frames,
        args.max_new_tokens,
    )
    with _target(args) as url:
        solo = solo_latency(url, request, args.solo, args.timeout) if args.solo else None
        report = run_load(
            url, clients=args.clients, requests=args.requests, request=request, timeout_s=args.timeout
        )
    report = _report(args, request, solo, report)
    print(json.dumps(report) if args.json else _text(report))
    return 0 if report["lost"] == report["failed"] == 0 and report["accounted"] else 1


@contextmanager
def _target(args):
    if args.url:
        yield args.url
    else:
        from pipeline.limits import AppSettings

        with local_app(AppSettings(queue_size=args.queue_size, concurrency=args.concurrency)) as url:
            yield url


def _report(args, request: Request, solo: float | None, load: dict) -> dict:
    ratio = round(load["p50_s"] / solo, 2) if solo and load["p50_s"] else None
    return {
        "bench": "load",
        "clients": args.clients,
        "requests_per_client": args.requests,
        "queue_size": None if args.url else args.queue_size,
        "concurrency": None if args.url else args.concurrency,
        "methods": list(request.methods),
        "max_frames": request.max_frames,
        "max_new_tokens": request.max_new_tokens,
        **load,
        "solo_p50_s": solo,
        "ratio_p50_load_over_solo": ratio,
        "machine": machine(),
    }


def _text(r: dict) -> str:
    return (
        f"{r['sent']} requests from {r['clients']} clients: {r['completed']} completed, {r['busy']} busy, "
        f"{r['failed']} failed, {r['lost']} lost; p50 {r['p50_s']} s, p95 {r['p95_s']} s "
        f"(alone {r['solo_p50_s']} s, ratio {r['ratio_p50_load_over_solo']}); {r['machine']['cpu']}"
    )


if __name__ == "__main__":
    sys.exit(main())
