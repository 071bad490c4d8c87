"""Sampling timestamped frames from a video, and grouping them into segments.

`sample` splits the video's duration into T equal bins (T = fps x duration, at most max_frames) and returns
one frame per bin, with its presentation timestamp (from pts, so variable frame rate is right) and its
source frame index. How each frame is reached is planned from the packet index (`plan_steps`):
- when the next frame is a short way ahead, keep decoding forward: dense requests become one sequential pass;
- when a keyframe lies between here and there and seeking to it skips more than `SEEK_COST` frames, seek:
  sparse requests jump from keyframe to keyframe;
- when reaching the bin's centre frame would still cost more than `SNAP_AFTER` decoded frames and the bin
  holds a keyframe, take the keyframe nearest the centre instead (one decoded frame), unless `exact=True`.
Every returned timestamp and index is the one of the frame actually decoded, never the one we aimed for.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import av
import numpy as np
from PIL import Image

from .container import (
    DEMUX_ERRORS,
    Deadline,
    PacketIndex,
    PathLike,
    check_file,
    open_container,
    open_video,
    video_stream,
)
from .errors import CorruptVideoError, ResolutionTooLargeError, too_long
from .limits import DEFAULT_LIMITS, Limits
from .probe import VideoInfo, check_resolution, inspect

SEEK_COST = 8  # frames of decoding that one seek is worth (flush, demuxer restart, refilling threads)
SNAP_AFTER = 32  # frames of decoding beyond which a keyframe in the same bin is taken instead


@dataclass
class Frames:
    """Sampled frames. T frames of H x W pixels.

    frames: [T, H, W, 3] uint8 RGB, rotation applied, long side at most the requested max_side.
    timestamps: [T] float64 seconds since the first frame, from each frame's pts, increasing.
    indices: [T] int64 source frame index (position in presentation order), increasing.
    info: the probe of the source, when known.
    """

    frames: np.ndarray
    timestamps: np.ndarray
    indices: np.ndarray
    info: VideoInfo | None = None

    def __post_init__(self) -> None:
        n = len(self.frames)
        if self.frames.ndim != 4 or self.frames.shape[-1] != 3 or self.frames.dtype != np.uint8:
            raise ValueError(
                f"frames must be [T, H, W, 3] uint8, got {self.frames.shape} {self.frames.dtype}"
            )
        if self.timestamps.shape != (n,) or self.indices.shape != (n,):
            raise ValueError(
                f"timestamps {self.timestamps.shape} and indices {self.indices.shape} must be ({n},)"
            )

    def __len__(self) -> int:
        return len(self.frames)


@dataclass(frozen=True)
class Step:
    """Decode up to source frame `position`; first seek to keyframe `seek_to` if it is not None."""

    position: int
    seek_to: int | None


# ----------------------------------------------------------------------------------------------- planning


def target_count(duration: float, fps: float, max_frames: int) -> int:
    """T: frames at `fps` over `duration`, at least 1 and at most `max_frames`."""
    if not fps > 0 or not max_frames >= 1:
        raise ValueError(f"fps and max_frames must be positive, got fps={fps}, max_frames={max_frames}")
    return max(1, min(int(max_frames), int(duration * fps + 0.5)))


def _exact_step(target: int, pos: int, keyframes: np.ndarray) -> tuple[Step, int]:
    """Cheapest way to `target` from `pos` (last decoded frame, -1 at the start): (step, frames decoded)."""
    key = int(keyframes[np.searchsorted(keyframes, target, side="right") - 1])
    forward = target - pos
    seek = SEEK_COST + target - key + 1
    if key > pos + 1 and seek < forward:
        return Step(target, key), seek
    return Step(target, None), forward


def _snap_step(times, keyframes, pos: int, lo: float, centre: float, hi: float) -> tuple[Step, int] | None:
    """Reach the keyframe nearest `centre` within [lo, hi) and after `pos`, if there is one."""
    key_times = times[keyframes]
    inside = keyframes[(key_times >= lo) & (key_times < hi) & (keyframes > pos)]
    if len(inside) == 0:
        return None
    key = int(inside[np.argmin(np.abs(times[inside] - centre))])
    if key - pos <= SEEK_COST + 1:
        return Step(key, None), key - pos
    return Step(key, key), SEEK_COST + 1


def _keyframe_positions(keyframe: np.ndarray) -> np.ndarray:
    keyframes = np.flatnonzero(keyframe)
    if len(keyframes) == 0 or keyframes[0] != 0:
        keyframes = np.concatenate([[0], keyframes])  # decoding from the very start always works
    return keyframes


def plan_steps(
    times: np.ndarray, keyframe: np.ndarray, duration: float, count: int, *, exact: bool
) -> list[Step]:
    """One step per bin of `count` equal bins over [0, duration), in order, each past the previous one.

    times: [N] float64 sorted display times of the source frames; keyframe: [N] bool.
    Bins that fall on an already chosen frame (more bins than frames) are dropped, so len <= count.
    """
    keyframes = _keyframe_positions(keyframe)
    width = duration / count
    steps, pos = [], -1
    for k in range(count):
        lo, centre, hi = k * width, (k + 0.5) * width, (k + 1) * width
        target = max(0, int(np.searchsorted(times, centre, side="right")) - 1)
        if target <= pos:
            continue
        step, cost = _exact_step(target, pos, keyframes)
        if not exact and cost > SNAP_AFTER:
            snapped = _snap_step(times, keyframes, pos, lo, centre, hi)
            if snapped is not None and snapped[1] < cost:
                step = snapped[0]
        steps.append(step)
        pos = step.position
    return steps


def exact_steps(positions, keyframe: np.ndarray) -> list[Step]:
    """Steps that decode exactly the given source frames (sorted, duplicates dropped), cheapest way."""
    keyframes = _keyframe_positions(keyframe)
    steps, pos = [], -1
    for target in sorted({int(p) for p in positions}):
        steps.append(_exact_step(target, pos, keyframes)[0])
        pos = target
    return steps


# ----------------------------------------------------------------------------------------------- decoding


class Decoder:
    """Decodes the video stream of `path` forward from the start, seeking when a step asks for it.

    Uses its own container, so decoding starts from a clean demuxer and decoder. If a seek fails (a
    container without an index), it reopens the file and decodes forward instead: slower, same frames.
    """

    def __init__(self, path: PathLike, index: PacketIndex, wanted: list[int], deadline: Deadline) -> None:
        self.path, self.index, self.deadline = path, index, deadline
        self._wanted_pts = {int(index.pts[p]) for p in wanted}
        self.container = self.stream = self._frames = None
        self._reopen()

    def __enter__(self) -> Decoder:
        return self

    def __exit__(self, *exc) -> None:
        self.container.close()

    def _reopen(self) -> None:
        if self.container is not None:
            self.container.close()
        self.container = open_container(self.path)
        self.stream = video_stream(self.container)
        self.stream.thread_type = "AUTO"
        self._skip = "DEFAULT"
        self._frames = self._decode_forward()

    def _seek(self, position: int) -> None:
        try:
            self.container.seek(int(self.index.pts[position]), stream=self.stream)
        except av.error.FFmpegError:
            self._reopen()
            return
        self._frames = self._decode_forward()

    def _decode_forward(self):
        packets = self.container.demux(self.stream)
        while True:
            self.deadline.check()
            try:
                packet = next(packets)
            except StopIteration:
                return
            except DEMUX_ERRORS:
                return  # the container is damaged from here on
            self._set_skip(packet)
            try:
                yield from packet.decode()
            except av.error.FFmpegError:
                continue  # a damaged packet loses its own frame, not the rest

    def _set_skip(self, packet: av.Packet) -> None:
        """Let the decoder drop non-reference frames we do not want: nothing depends on them."""
        skip = "DEFAULT" if packet.pts is None or packet.pts in self._wanted_pts else "NONREF"
        if skip != self._skip:
            self.stream.codec_context.skip_frame = skip
            self._skip = skip

    def _position(self, frame: av.VideoFrame, previous: int) -> int:
        ts = frame.pts if frame.pts is not None else frame.dts
        return previous + 1 if ts is None else self.index.position(ts)

    def next_from(self, step: Step, previous: int) -> tuple[av.VideoFrame, int] | None:
        """The first decoded frame at or after `step.position`, with its source index (None at the end)."""
        if step.seek_to is not None:
            self._seek(step.seek_to)
        last = previous
        for frame in self._frames:
            last = self._position(frame, last)
            if last >= step.position:
                return frame, last
        return None


def output_size(info: VideoInfo, max_side: int | None) -> tuple[int, int]:
    """(width, height) of the returned frames: as displayed, long side at most `max_side`."""
    width, height = info.width, info.height
    if max_side is not None and max(width, height) > max_side:
        scale = max_side / max(width, height)
        width, height = max(1, round(width * scale)), max(1, round(height * scale))
    return width, height


def _to_rgb(frame: av.VideoFrame, size: tuple[int, int], rotation: int) -> np.ndarray:
    """[H, W, 3] uint8 display-oriented picture: scaled by swscale while converting, then turned."""
    width, height = size if rotation % 180 == 0 else size[::-1]
    downscale = width * height < frame.width * frame.height
    rgb = frame.to_ndarray(
        width=width, height=height, format="rgb24", interpolation="AREA" if downscale else "BILINEAR"
    )
    return np.rot90(rgb, rotation // 90) if rotation else rgb


def _check_memory(count: int, size: tuple[int, int], limits: Limits) -> None:
    needed_mb = count * size[0] * size[1] * 3 / 2**20
    if needed_mb > limits.max_output_mb:
        raise ResolutionTooLargeError(
            f"{count} frames at {size[0]}x{size[1]} need {needed_mb:,.0f} MB, more than the "
            f"{limits.max_output_mb:,.0f} MB allowed; lower max_side or max_frames."
        )


def _check_duration(info: VideoInfo, limits: Limits) -> None:
    if info.duration > limits.max_duration_s:
        raise too_long(info.duration, limits.max_duration_s)


def iter_decoded(decoder: Decoder, steps: list[Step], size: tuple[int, int], rotation: int):
    """Run a plan, yielding (rgb [H, W, 3] uint8, pts, source position) for each frame that decodes."""
    last = -1
    for step in steps:
        if step.position <= last:
            continue  # a missing frame made an earlier step land here already
        found = decoder.next_from(step, last)
        if found is None:
            return
        frame, last = found
        pts = frame.pts if frame.pts is not None else int(decoder.index.pts[last])
        yield _to_rgb(frame, size, rotation), pts, last


def _collect(decoded, count: int, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """([T, H, W, 3] frames, [T] pts, [T] positions) from `iter_decoded`, T <= count."""
    out = np.empty((count, size[1], size[0], 3), dtype=np.uint8)
    pts, positions = [], []
    for rgb, ts, position in decoded:
        out[len(pts)] = rgb
        pts.append(ts)
        positions.append(position)
    return out[: len(pts)], np.asarray(pts, dtype=np.int64), np.asarray(positions, dtype=np.int64)


def sample(
    path: PathLike,
    *,
    fps: float = 1.0,
    max_frames: int = 256,
    max_side: int | None = 640,
    time_limit_s: float | None = None,
    limits: Limits | None = None,
    exact: bool = False,
) -> Frames:
    """Sample frames uniformly over the whole video: one per bin of T = min(fps x duration, max_frames) bins.

    Returns Frames with frames [T, H, W, 3] uint8 RGB (rotation applied, long side <= max_side), timestamps
    [T] float64 seconds from pts, indices [T] int64 source frame indices. T may be smaller than planned for
    a very short video (fewer frames than bins) or a damaged one (frames that do not decode are skipped).
    exact=True always takes the frame showing at each bin's centre; by default a keyframe in the bin is
    taken instead when the centre frame would cost much more decoding (see the module docstring).
    max_frames is itself capped by limits.max_frames.

    Limits (file size, source resolution, duration, output memory) are checked before any large frame is
    decoded; decoding stops with DecodeTimeoutError after `time_limit_s` (default limits.decode_time_limit_s).
    """
    if max_side is not None and max_side < 1:
        raise ValueError(f"max_side must be a positive number of pixels or None, got {max_side!r}")
    target_count(1.0, fps, max_frames)  # validates fps and max_frames before any work
    limits = limits or DEFAULT_LIMITS
    deadline = Deadline(time_limit_s if time_limit_s is not None else limits.decode_time_limit_s)
    check_file(path, limits)
    count_cap = min(max_frames, limits.max_frames)
    try:
        info, index = inspect_within_limits(path, limits, deadline)
        count = target_count(info.duration, fps, count_cap)
        size = output_size(info, max_side)
        _check_memory(count, size, limits)
        steps = plan_steps(index.times, index.keyframe, info.duration, count, exact=exact)
        with Decoder(path, index, [step.position for step in steps], deadline) as decoder:
            decoded = iter_decoded(decoder, steps, size, info.rotation)
            frames, pts, positions = _collect(decoded, len(steps), size)
    except av.error.FFmpegError as e:
        raise CorruptVideoError() from e
    if len(frames) == 0:
        raise CorruptVideoError()
    return Frames(frames, index.seconds(pts), positions, info)


def sample_at(
    path: PathLike,
    positions,
    *,
    size: tuple[int, int] | None = None,
    time_limit_s: float | None = None,
    limits: Limits | None = None,
) -> Frames:
    """The source frames at `positions` (indices in presentation order, as a model's own sampler plans them).

    Each frame is decoded at full resolution, as displayed, and, when `size` (width, height) differs, resized
    to it with PIL bicubic: what a model whose preprocessing resizes full-resolution frames with PIL sees.
    Positions past the last frame that decodes take the last one (a truncated file); a position asked for
    twice gives the same frame twice, in the order asked. Returns Frames [len(positions), H, W, 3] with each
    frame's pts timestamp and source index. Limits as in :func:`sample` (at most limits.max_frames positions).
    """
    limits = limits or DEFAULT_LIMITS
    wanted = np.asarray(positions, dtype=np.int64).reshape(-1)
    if not 1 <= len(wanted) <= limits.max_frames or (wanted < 0).any():
        raise ValueError(f"need 1 to {limits.max_frames} non-negative frame positions, got {len(wanted)}")
    deadline = Deadline(time_limit_s if time_limit_s is not None else limits.decode_time_limit_s)
    check_file(path, limits)
    try:
        info, index = inspect_within_limits(path, limits, deadline)
        full = output_size(info, None)
        out = size or full
        _check_memory(len(wanted), out, limits)
        unique = np.unique(np.minimum(wanted, len(index) - 1))
        steps = exact_steps(unique, index.keyframe)
        with Decoder(path, index, [step.position for step in steps], deadline) as decoder:
            decoded = _resized(iter_decoded(decoder, steps, full, info.rotation), out)
            frames, pts, got = _collect(decoded, len(steps), out)
    except av.error.FFmpegError as e:
        raise CorruptVideoError() from e
    if len(frames) == 0:
        raise CorruptVideoError()
    pick = np.clip(np.searchsorted(got, wanted, side="right") - 1, 0, len(got) - 1)
    return Frames(frames[pick], index.seconds(pts[pick]), got[pick], info)


def _resized(decoded, size: tuple[int, int]):
    """`iter_decoded`'s frames, each resized to `size` (width, height) with PIL bicubic when it differs."""
    for rgb, pts, position in decoded:
        if (rgb.shape[1], rgb.shape[0]) != tuple(size):
            rgb = np.asarray(Image.fromarray(rgb).resize(size, resample=Image.BICUBIC))
        yield rgb, pts, position


def inspect_within_limits(
    path: PathLike, limits: Limits, deadline: Deadline
) -> tuple[VideoInfo, PacketIndex]:
    """Probe, refusing an oversized resolution before any frame is decoded and then a too-long duration."""
    with open_video(path) as container:
        check_resolution(video_stream(container), limits)  # from the header
        info, index, stream = inspect(container, path, deadline)
        check_resolution(stream, limits)  # headers can lie; now one frame has been decoded
    _check_duration(info, limits)
    return info, index


# ----------------------------------------------------------------------------------------------- segments


@dataclass(frozen=True)
class Segment:
    """A run of at most `segment_frames` consecutive sampled frames; only the last one may be shorter.

    frames: positions into the sampled Frames, real frames only (a short last segment stays short: nothing is
    repeated to fill it, as in Tempo's own segmenting). start: timestamp of its first frame; end: start of
    the next segment (for the last one: its last frame plus one sampling step, within the video's duration);
    centre: midpoint of start and end.
    """

    index: int
    frames: range
    start: float
    end: float
    centre: float


def _last_end(frames: Frames) -> float:
    ts = frames.timestamps
    step = float(np.median(np.diff(ts))) if len(ts) > 1 else 0.0
    end = float(ts[-1]) + step
    if frames.info is not None:
        end = min(end, max(frames.info.duration, float(ts[-1])))
    return end


def segments(frames: Frames, segment_frames: int = 8) -> list[Segment]:
    """Group frames into consecutive segments of `segment_frames`, the last one holding what is left.

    Returns [S] segments, S = ceil(T / segment_frames); their frame ranges tile range(T) in order.
    """
    if segment_frames < 1:
        raise ValueError(f"segment_frames must be at least 1, got {segment_frames}")
    real = len(frames)
    if real == 0:
        return []
    count = math.ceil(real / segment_frames)
    starts = [float(frames.timestamps[g * segment_frames]) for g in range(count)]
    ends = starts[1:] + [_last_end(frames)]
    result = []
    for g, (start, end) in enumerate(zip(starts, ends, strict=True)):
        frames_of = range(g * segment_frames, min((g + 1) * segment_frames, real))
        result.append(Segment(g, frames_of, start, end, (start + end) / 2))
    return result
