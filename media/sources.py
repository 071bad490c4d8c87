"""Fetching a video from a URL with yt-dlp (as a library), inside our limits and address rules.

The URL is checked first (`urlguard.check_url`: http or https, every address of its host public); then one
`GuardedYoutubeDL` extracts and downloads it, all of its requests under the rules of `guarded_ytdlp`
(each connection and redirect hop checked, bytes counted while read, a watchdog on the time). Playlists
and live streams are refused; the format is the best progressive http(s) one at most `max_height` tall:
HLS and DASH may fall back to an external ffmpeg, which would make its own connections outside these checks.
A progress hook aborts the download as soon as the announced or received size passes the cap.

yt-dlp often knows neither duration nor size (direct links, <video> pages) and its own rejections are
silent, so both are checked again with `probe` after the download. Any failure removes the temporary folder.
"""

from __future__ import annotations

import shutil
import socket
import tempfile
from dataclasses import dataclass
from pathlib import Path

import yt_dlp
from yt_dlp.networking.exceptions import CertificateVerifyError, TransportError
from yt_dlp.networking.exceptions import HTTPError as YtdlpHTTPError

from . import urlguard
from .errors import (
    DownloadError,
    NotAVideoError,
    NoVideoStreamError,
    UnsupportedURLError,
    VideoError,
    too_large,
    too_long,
)
from .guarded_ytdlp import FetchState, GuardedYoutubeDL
from .limits import Limits
from .probe import VideoInfo, probe

PROGRESSIVE = ("http", "https")


@dataclass
class Fetched:
    """A downloaded video: `path` inside the temporary folder `tmpdir`, which the caller removes.

    Use as a context manager (`with fetch(url) as f:`) or call `cleanup()`; `keep(folder)` moves the file out.
    """

    path: Path
    info: VideoInfo
    url: str
    tmpdir: Path | None

    def cleanup(self) -> None:
        if self.tmpdir is not None:
            shutil.rmtree(self.tmpdir, ignore_errors=True)
            self.tmpdir = None

    def keep(self, folder: str | Path) -> Path:
        """Move the video into `folder` (created if needed), remove the temporary folder; returns the new path."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        target = _free_name(folder, self.path.name)
        shutil.move(str(self.path), target)
        self.cleanup()
        self.path = target
        return target

    def __enter__(self) -> Fetched:
        return self

    def __exit__(self, *exc) -> None:
        self.cleanup()


def _free_name(folder: Path, name: str) -> Path:
    """folder/name, or folder/stem-1.ext, -2, ... if taken: keeping a download never overwrites a file."""
    target, stem, suffix = folder / name, Path(name).stem, Path(name).suffix
    number = 0
    while target.exists():
        number += 1
        target = folder / f"{stem}-{number}{suffix}"
    return target


# ----------------------------------------------------------------------------------- format and hooks


def _format_rank(item: tuple[int, dict], max_height: int) -> tuple:
    position, fmt = item
    height = fmt.get("height")
    fits = height is None or height <= max_height
    has_audio = fmt.get("acodec") not in (None, "none")
    return (fits, (height or 0) if fits else -height, has_audio, position)


def choose_format(formats: list[dict], *, max_height: int, max_bytes: int) -> tuple[dict | None, bool]:
    """The best progressive video format at most `max_height` tall (else the smallest taller one).

    Returns (format or None, whether a format was left out only for being larger than `max_bytes`).
    """
    usable, too_big = [], False
    for position, fmt in enumerate(formats):
        if fmt.get("protocol") not in PROGRESSIVE or fmt.get("vcodec") == "none" or fmt.get("has_drm"):
            continue
        size = fmt.get("filesize") or fmt.get("filesize_approx")
        if size and size > max_bytes:
            too_big = True
            continue
        usable.append((position, fmt))
    if not usable:
        return None, too_big
    return max(usable, key=lambda item: _format_rank(item, max_height))[1], too_big


def _format_selector(state: FetchState):
    def select(ctx: dict):
        fmt, too_big = choose_format(
            ctx.get("formats") or [],
            max_height=state.limits.max_height,
            max_bytes=state.limits.max_size_bytes,
        )
        if fmt is None:  # else yt-dlp's own "Requested format is not available. Use --list-formats ..."
            state.fail(
                too_large(state.limits.max_size_mb) if too_big else _no_format(ctx.get("formats") or [])
            )
        return [fmt] if fmt is not None else []

    return select


def _no_format(formats: list[dict]) -> VideoError:
    """Why no format can be downloaded: DRM, streams only (HLS, DASH), or nothing with a picture."""
    if any(fmt.get("has_drm") for fmt in formats):
        return UnsupportedURLError("This video is copy-protected (DRM) and cannot be used; try another link.")
    if any(fmt.get("vcodec") != "none" for fmt in formats):
        return UnsupportedURLError(
            "This site offers the video only as a stream (HLS or DASH), which is not downloaded here; "
            "paste a link to a video file or to another site."
        )
    return UnsupportedURLError("No video with a picture was found at this link; paste a link to a video.")


def _progress_hook(state: FetchState):
    def hook(progress: dict) -> None:
        if progress.get("status") != "downloading":
            return
        total = progress.get("total_bytes") or 0
        done = progress.get("downloaded_bytes") or 0
        if max(total, done) > state.limits.max_size_bytes:
            state.fail(too_large(state.limits.max_size_mb))
            raise yt_dlp.utils.DownloadCancelled()

    return hook


class _QuietLogger:
    """Keeps yt-dlp off stdout/stderr (the CLI prints JSON there); errors are mapped, not printed."""

    def debug(self, msg: str) -> None:
        pass

    info = warning = error = debug


def _params(state: FetchState, folder: Path) -> dict:
    return {
        "format": _format_selector(state),
        "outtmpl": {"default": "%(id).60B.%(ext)s"},
        "paths": {"home": str(folder), "temp": str(folder)},
        "noplaylist": True,
        "extract_flat": "in_playlist",
        "quiet": True,
        "no_warnings": True,
        "noprogress": True,
        "logger": _QuietLogger(),
        "progress_hooks": [_progress_hook(state)],
        "socket_timeout": state.timeout_s,
        "retries": 1,
        "fragment_retries": 1,
        "extractor_retries": 0,
        "cachedir": False,
        "cookiefile": None,
        "proxy": "",
        "external_downloader": {"default": "native"},
        "hls_prefer_native": True,
        "fixup": "never",
        "overwrites": True,
        "updatetime": False,
        "check_formats": False,
        "restrictfilenames": True,
    }


# ---------------------------------------------------------------------------------------- errors


def _causes(error: BaseException):
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        yield error
        nxt = getattr(error, "exc_info", None)
        nxt = nxt[1] if isinstance(nxt, tuple) and len(nxt) > 1 else None
        error = nxt or getattr(error, "cause", None) or error.__cause__ or error.__context__


def _plain(text: str) -> str:
    text = text.replace("ERROR: ", "").split(" (caused by")[0].split("; please report")[0]
    if text.startswith("[") and "] " in text:
        text = text.split("] ", 1)[1]
    return text.strip().rstrip(".")


def _map_error(error: BaseException) -> VideoError:
    """Turn a yt-dlp failure into one typed sentence."""
    for cause in _causes(error):
        if isinstance(cause, yt_dlp.utils.UnsupportedError):
            return UnsupportedURLError(
                "No video was found at this link; paste a link to a video file or to a page that plays one."
            )
        if isinstance(cause, CertificateVerifyError):
            return DownloadError("The site's security certificate could not be verified; check the link.")
        if isinstance(cause, YtdlpHTTPError) and cause.redirect_loop:
            return DownloadError(
                "The link redirects too many times or in a loop; paste the address the video finally opens at."
            )
        if isinstance(cause, YtdlpHTTPError):
            return DownloadError(
                f"The server answered {cause.status} {cause.reason or ''}".rstrip()
                + "; check that the link is right and public."
            )
        if isinstance(cause, (TimeoutError, socket.timeout)):
            return DownloadError("The server did not answer in time; try again later.")
    for cause in _causes(error):
        if isinstance(cause, TransportError):
            return DownloadError(f"The server could not be reached ({_plain(str(cause))}); try again later.")
    return DownloadError(f"The video could not be downloaded: {_plain(str(error))}.")


def _refuse_unwanted(info: dict, limits: Limits) -> None:
    kind = info.get("_type", "video")
    if kind in ("playlist", "multi_video"):
        raise UnsupportedURLError(
            "This link is a playlist or holds several videos; paste a link to a single video."
        )
    if info.get("is_live"):
        raise UnsupportedURLError("Live streams cannot be used; paste a link to a recorded video.")
    duration = info.get("duration")
    if duration and duration > limits.max_duration_s:
        raise too_long(duration, limits.max_duration_s)


def _run_ytdlp(url: str, folder: Path, state: FetchState) -> dict:
    with GuardedYoutubeDL(_params(state, folder), state) as ydl:
        try:
            info = ydl.extract_info(url, download=False)
            _refuse_unwanted(info, state.limits)
            return ydl.process_ie_result(info, download=True)
        except (yt_dlp.utils.YoutubeDLError, OSError) as e:
            raise state.problem or _map_error(e) from e


def _downloaded_file(info: dict, folder: Path) -> Path:
    for item in info.get("requested_downloads") or []:
        path = Path(item.get("filepath") or "")
        if path.is_file():
            return path
    files = [p for p in folder.iterdir() if p.is_file() and not p.name.endswith((".part", ".ytdl"))]
    if len(files) != 1:
        raise DownloadError("The download finished without a video file; try another link.")
    return files[0]


_NOT_A_VIDEO_FROM_LINK = {
    NotAVideoError: "The link gave a file that is not a video; paste a link to a video or a page that plays one.",
    NoVideoStreamError: "The link gave sound but no picture; paste a link to a video.",
}


def _check_download(path: Path, limits: Limits) -> VideoInfo:
    if path.stat().st_size > limits.max_size_bytes:
        raise too_large(limits.max_size_mb)
    try:
        info = probe(path, limits=limits)
    except (NotAVideoError, NoVideoStreamError) as e:
        raise type(e)(_NOT_A_VIDEO_FROM_LINK[type(e)]) from e
    if info.duration > limits.max_duration_s:
        raise too_long(info.duration, limits.max_duration_s)
    return info


def fetch(
    url: str,
    *,
    out_dir: str | Path | None = None,
    max_size_mb: float = 500,
    max_duration_s: float = 3600,
    max_height: int = 720,
    timeout_s: float = 60,
    allow_private: bool = False,
) -> Fetched:
    """Download the video at `url` (a direct link, a page with a <video>, or any site yt-dlp supports).

    The file goes to a new temporary folder (inside `out_dir` if given), removed on any failure; on success
    the caller removes it (`Fetched.cleanup()` or `with`). allow_private=True lifts the address check (tests).
    Raises UnsupportedURLError, PrivateAddressError, DownloadError, VideoTooLargeError, VideoTooLongError, or
    the errors of `probe` when the download is not a usable video.
    """
    if not timeout_s > 0:
        raise ValueError(f"timeout_s must be positive, got {timeout_s!r}")
    limits = Limits(max_duration_s=max_duration_s, max_size_mb=max_size_mb, max_height=max_height)
    urlguard.check_url(url, allow_private=allow_private)
    if out_dir is not None:
        Path(out_dir).mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(prefix="fetch-", dir=out_dir))
    try:
        with FetchState(limits, timeout_s, allow_private) as state:
            info = _run_ytdlp(url.strip(), folder, state)
        if state.problem is not None:
            raise state.problem
        path = _downloaded_file(info, folder)
        return Fetched(path=path, info=_check_download(path, limits), url=url, tmpdir=folder)
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise


__all__ = ["Fetched", "choose_format", "fetch"]
