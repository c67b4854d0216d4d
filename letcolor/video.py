"""Colorizing video: decoded and encoded with PyAV (FFmpeg), colorized in batches, colours held steady over time.

Modes:
- "shot" (the default): the video is split into shots (a cut is a large change between consecutive gray frames,
  see `find_cuts`). Every frame of a shot gets the same scene vector, the element-wise median of its frames'
  vectors (paper 4.5 over time). The colours are also carried along the motion: the previous frame's ab is warped
  to the current frame with dense optical flow (OpenCV's DIS) and blended with the current prediction where the flow
  passes a forward-backward check, so that cuts, new content and occlusions take the fresh prediction.
- "frame": every frame on its own, as a photo would be (for comparison).

The shot mode reads the video twice (scene vectors and cuts, then colours); memory holds one batch of frames (and
a few colorized ones waiting for the encoder, which runs on a thread of its own) and one scene vector per frame,
whatever the video's length. The output keeps the frames' timestamps (so the frame count, frame rate and duration;
put in order where the container gives them otherwise, see `Timeline`),
is H.264 in yuv420p (what browsers play; an odd side gains a copy of its last row or column), and copies the audio
packets unchanged (re-encoded to AAC only where the output container cannot hold the audio codec, or browsers could
not play it in an MP4, as for PCM).
"""

import functools
import heapq
import math
import os
import queue
import threading
import warnings
from collections import deque
from collections.abc import Callable, Generator, Iterator
from contextlib import closing
from dataclasses import dataclass
from enum import StrEnum
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np
import torch
import torch.nn.functional as F
from av.video.reformatter import Interpolation, VideoReformatter
from PIL import Image

from letcolor.color import lightness_to_input
from letcolor.fullres import compose_rgb_8bit, lightness
from letcolor.images import ImageSource, InvalidImageError, Pixels, check_image_file
from letcolor.model import GLOBAL_INPUT_SIZE
from letcolor.outputs import new_partial_file
from letcolor.pipeline import DEFAULT_MAX_SIDE, Colorizer, Options, Reference, is_count, is_number

# Container types read as video (by file extension); GIFs stay images.
VIDEO_SUFFIXES = {
    ".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi", ".mpg", ".mpeg", ".ts", ".wmv", ".flv", ".ogv",
    ".3gp", ".3g2", ".mts", ".m2ts", ".vob", ".dv", ".mxf", ".asf",  # phones, camcorders, DVDs, broadcast
}  # fmt: skip
OUTPUT_SUFFIXES = {".mp4", ".m4v", ".mov", ".mkv"}  # containers that hold H.264
BROWSER_SUFFIXES = {".mp4", ".m4v"}  # outputs for browsers: their audio must be a codec that browsers play
# FFmpeg's MOV muxer lists these among its codecs but refuses them when writing ("opus only supported in MP4")
MOV_REFUSED_AUDIO = {"opus", "flac"}
SOUND_LIMIT_SLACK = 1.0  # seconds of sound beyond max_seconds let through as decoded (a last packet, rounding)
BROWSER_AUDIO_CODECS = {"aac", "mp3", "opus", "flac"}
# the rates AAC can hold; audio at another rate is re-encoded at the next one up (37.8 kHz CD-ROM XA audio: 44.1)
AAC_SAMPLE_RATES = (7350, 8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000, 64000, 88200, 96000)
AAC_LAYOUTS = {1: "mono", 2: "stereo", 3: "3.0", 4: "4.0", 5: "5.0", 6: "5.1", 7: "6.1"}  # by channels; else stereo
STILL_IMAGE_DEMUXERS = {"image2"}  # FFmpeg reads a JPEG as a one-frame video; other images come through *_pipe
EBML_HEADER_ID, MATROSKA_SEGMENT_ID = 0x1A45DFA3, 0x18538067  # Matroska and WebM files: the header, then the Segment
MAX_FRAME_PIXELS = 3840 * 2160  # larger frames are refused from the stream's header, before decoding
DEFAULT_BATCH_SIZE = 8
# Frames to RGB: area averaging where resized; full chroma interpolation, without which FFmpeg took 10-bit video 1.3
# levels darker (its white to 253; 8-bit frames convert the same either way)
RGB_CONVERSION = Interpolation.AREA | Interpolation.FULL_CHR_H_INT
# FFmpeg's numbers for the output's matrix (SMPTE 170M, as BT.601), range (limited), primaries and transfer (BT.709, as
# sRGB's, which the frames are in)
OUTPUT_COLOUR_TAGS = (6, 1, 1, 1)
# A re-encoded track's gap (no packets) is filled with silence where it is longer than AUDIO_GAP_SECONDS and at most
# MAX_AUDIO_GAP_SECONDS: a longer jump is taken for a broken timestamp (hours of silence pushed the rest back).
AUDIO_GAP_SECONDS, MAX_AUDIO_GAP_SECONDS = 0.01, 60
REORDER_FRAMES = 4  # frames whose timestamps may come out of order (`Timeline`)
WRITER_QUEUE_FRAMES = 4  # colorized frames waiting for the encoder (1-8 measured alike at 480p; 1 gained least)
# CRF 18: visually near-lossless. veryfast: a third of medium's encoding time on a 2-core CPU, for larger files.
H264_OPTIONS = {"crf": "18", "preset": "veryfast"}
# subme=1 (veryfast's is 2): 0.75x the encoding time for 4% larger files on the real drive clip (CRF keeps quality).
# bframes=0: with B-frames, an MP4 whose frames pause before the last one ended its track at the last frame in decode
# order (a screen recording: 0.4 s of 2); 5% larger files on the real drive clip, in the same time.
X264_PARAMS = {"subme": "1", "bframes": "0"}
# x264's AVX-512 kernels (in PyAV's FFmpeg) encode the same frames differently from run to run (measured: outputs up
# to 32 levels apart); its AVX2 kernels, on every CPU that has AVX-512, are deterministic.
DETERMINISTIC_X264 = {"asm": "avx2"}
THUMBNAIL_SIDE = 28  # cut detection compares 28x28 averages of the 224x224 global input
# A cut: consecutive thumbnails differ by a mean |L| (L* units, 0..100) of at least CUT_MIN_CHANGE, and by
# CUT_CONTRAST times the median change of the CUT_WINDOW frames on either side. The second condition keeps fast
# motion (a drive at 1 frame/s changes by 9 on average, at most 18) from counting as cuts; two different photos
# differ by 13 to 39.
CUT_MIN_CHANGE = 8.0
CUT_CONTRAST = 3.0
CUT_WINDOW = 5
FLOW_BLEND = 0.8  # weight of the colours carried along the motion where the flow is reliable
FLOW_CHECK_PIXELS = 1.0  # forward-backward disagreement (ab-grid pixels) above which the flow is not trusted
FLOW_MIN_SIDE = 12  # DIS optical flow refuses smaller frames (a sliver of a video, 256x4 at H/2): nothing is carried

ProgressCallback = Callable[[int, int], None]  # (frames done, frames in all passes, 0 if unknown)


class InvalidVideoError(ValueError):
    """The input cannot be colorized as a video: not a video, unreadable, corrupt, empty, or too large."""


class Mode(StrEnum):
    SHOT = "shot"
    FRAME = "frame"


@dataclass(frozen=True)
class VideoInfo:
    width: int
    height: int
    frames: int  # as declared by the container (0 if it does not say)
    fps: Fraction
    duration: float  # the video's seconds (0 if the container does not say)
    sound_duration: float = 0.0  # the longest audio stream's seconds (0 if none)
    start: float | None = None  # when the video's duration starts, in seconds (None if the container does not say)


def is_video_path(path: str | Path) -> bool:
    return Path(path).suffix.lower() in VIDEO_SUFFIXES


def _is_animated_webp(path: Path) -> bool:
    """(Pillow calls a multi-page TIFF, an MPO's previews and a PSD's layers animated too: not for a video.)"""
    with Image.open(path) as image:
        return image.format == "WEBP" and getattr(image, "is_animated", False)


def ffmpeg_path(path: Path) -> str:
    """`path` as FFmpeg reads a file's: absolute, since it takes what comes before a colon in a relative path
    ("take:2.mp4") for a protocol's name and fails ("Protocol not found")."""
    return os.path.abspath(path)


def _open(path: Path) -> av.container.InputContainer:
    try:
        container = av.open(ffmpeg_path(path))
    except FileNotFoundError:
        raise
    except av.InvalidDataError as error:  # (FFmpeg's words came with its error number and the path again)
        raise InvalidVideoError(f"{path}: not a readable video (not a video file, or truncated or damaged)") from error
    except (av.FFmpegError, OSError) as error:
        raise InvalidVideoError(f"{path}: not a readable video ({error.strerror or error})") from error
    if video_stream(container) is None:
        kind = "only a still picture (as cover art)" if container.streams.video else "no video stream"
        container.close()
        raise InvalidVideoError(f"{path}: has {kind}")
    if container.format.name in STILL_IMAGE_DEMUXERS or container.format.name.endswith("_pipe"):
        container.close()
        try:  # FFmpeg picks its still-image reader by the name alone: notes.txt renamed notes.jpg opens as one
            check_image_file(path)
        except InvalidImageError as error:  # (or one over the pixel limit)
            reason = str(error).removeprefix(f"{path}: ")
            raise InvalidVideoError(f"{path}: not a readable video (read as an image: {reason})") from error
        if _is_animated_webp(path):  # (FFmpeg reads its first frame's header, then fails)
            raise InvalidVideoError(
                f"{path}: an animated WebP, which FFmpeg cannot read as a video: convert it to MP4 or GIF (as a "
                "photo, its first frame is colorized)"
            )
        raise InvalidVideoError(f"{path}: a still image, not a video (colorize it as a photo)")
    if container.format.name.startswith("matroska"):
        declared, size = _matroska_declared_bytes(path), path.stat().st_size
        if declared is not None and size < declared:
            container.close()
            raise InvalidVideoError(
                f"{path}: the file ends at byte {size} of the {declared} its header declares (truncated or damaged)"
            )
    return container


def video_stream(container: av.container.InputContainer) -> av.VideoStream | None:
    """The container's first video stream that is not a still picture attached to it (a song's cover art)."""
    attached = av.stream.Disposition.attached_pic
    return next((stream for stream in container.streams.video if not stream.disposition & attached), None)


def _matroska_declared_bytes(path: Path) -> int | None:
    """Where a Matroska or WebM file's header says it ends (its Segment's end), or None where it does not say (a live
    recording's unknown size) or the header cannot be read. Matroska declares no frame count: FFmpeg reads a truncated
    file to its last whole frame without an error, as a shorter video."""
    with path.open("rb") as file:
        header = file.read(4096)
    try:
        element, offset = _ebml_number(header, 0, marker=True)
        size, offset = _ebml_number(header, offset, marker=False)
        if element != EBML_HEADER_ID or size is None:
            return None
        element, offset = _ebml_number(header, offset + size, marker=True)
        size, offset = _ebml_number(header, offset, marker=False)
    except IndexError:  # a header longer than read, or cut short
        return None
    return offset + size if element == MATROSKA_SEGMENT_ID and size is not None else None


def _ebml_number(data: bytes, offset: int, marker: bool) -> tuple[int | None, int]:
    """The EBML variable-length number at `offset` (an element ID with its length `marker` bits, or a size without
    them: None for an unknown size, all value bits 1) and the offset after it."""
    length = 9 - data[offset].bit_length()  # one more than the first byte's leading zeros
    if length > 8 or offset + length > len(data):
        raise IndexError("not an EBML number")
    value = int.from_bytes(data[offset : offset + length], "big")
    if marker:
        return value, offset + length
    value &= (1 << 7 * length) - 1
    return (None if value == (1 << 7 * length) - 1 else value), offset + length


def _check_stream(stream: av.VideoStream, path: Path) -> None:
    if stream.codec_context is None:  # a codec that FFmpeg does not know
        raise InvalidVideoError(f"{path}: the video's codec is not one that FFmpeg knows")
    width, height = stream.codec_context.width, stream.codec_context.height
    if width < 1 or height < 1:
        raise InvalidVideoError(f"{path}: the video has no frame size")
    if width * height > MAX_FRAME_PIXELS:
        raise InvalidVideoError(f"{path}: {width}x{height} frames are over the {MAX_FRAME_PIXELS / 1e6:.1f} MP limit")


def probe(path: str | Path) -> VideoInfo:
    """The video's size, declared frame count, frame rate, duration and audio streams (InvalidVideoError)."""
    path = Path(path)
    with _open(path) as container:
        return _info(container, path)


def _info(container: av.container.InputContainer, path: Path) -> VideoInfo:
    stream = video_stream(container)
    _check_stream(stream, path)
    fps = stream.average_rate or stream.guessed_rate or Fraction(0)
    sound = max((_seconds(audio, container) for audio in _known_audio(container)), default=0.0)
    size = stream.codec_context.width, stream.codec_context.height
    return VideoInfo(*size, stream.frames, Fraction(fps), _seconds(stream, container), sound, _start(stream, container))


def _start(stream: av.stream.Stream, container: av.container.InputContainer) -> float | None:
    """When the duration that `_seconds` gives starts."""
    if stream.duration:
        return float(stream.start_time * stream.time_base) if stream.start_time is not None else None
    return container.start_time / 1e6 if container.start_time is not None else None


def _seconds(stream: av.stream.Stream, container: av.container.InputContainer) -> float:
    """A stream's duration, or the container's (its longest stream's) where the stream does not say."""
    return float(stream.duration * stream.time_base) if stream.duration else (container.duration or 0) / 1e6


def _decoding_errors(path: Path, packets: Iterator) -> Iterator:
    try:
        yield from packets
    except av.FFmpegError as error:
        raise InvalidVideoError(f"{path}: the video is corrupt ({error})") from error


def _video_frames(path: Path) -> Iterator[av.VideoFrame]:
    with _open(path) as container:
        yield from _decoded(container, path)


def _decoded(container: av.container.InputContainer, path: Path) -> Iterator[av.VideoFrame]:
    stream = video_stream(container)
    _check_stream(stream, path)
    stream.thread_type = "AUTO"
    yield from _decoding_errors(path, container.decode(stream))


def read_frames(path: str | Path) -> Iterator[np.ndarray]:
    """The video's frames as (H, W, 3) uint8 RGB arrays, in order (InvalidVideoError)."""
    for frame in _video_frames(Path(path)):
        yield frame.to_ndarray(format="rgb24")


def _batches(items: Iterator, size: int) -> Iterator[list]:
    batch = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def _rgb(
    frame: av.VideoFrame, reformatter: VideoReformatter, path: Path, size: tuple[int, int] | None = None
) -> Pixels:
    """The frame's sRGB pixels, resized (area average) to `size` (width, height) if given. One reformatter serves a
    whole pass: it keeps FFmpeg's converter, which frame.to_ndarray would set up again for every frame (2x slower)."""
    width, height = size or (None, None)
    try:
        rgb = reformatter.reformat(frame, width, height, "rgb24", interpolation=RGB_CONVERSION).to_ndarray()
    except av.FFmpegError as error:  # a pixel format that FFmpeg decodes but cannot convert, as rgb4
        raise InvalidVideoError(f"{path}: its {frame.format.name} frames cannot be converted ({error})") from error
    return Pixels(torch.from_numpy(rgb).permute(2, 0, 1), 255, None)


def scan_input(frame: av.VideoFrame, reformatter: VideoReformatter, path: Path) -> torch.Tensor:
    """The global branch's input (1, 1, 224, 224) for a frame, shrunk by FFmpeg before L* is taken: the first pass
    never converts full-size frames."""
    return lightness_to_input(lightness(_rgb(frame, reformatter, path, (GLOBAL_INPUT_SIZE, GLOBAL_INPUT_SIZE))))


def _thumbnails(global_inputs: torch.Tensor) -> torch.Tensor:
    """(N, THUMBNAIL_SIDE, THUMBNAIL_SIDE) L* averages of the frames' global inputs (N, 1, 224, 224)."""
    return F.adaptive_avg_pool2d(global_inputs, THUMBNAIL_SIDE)[:, 0] * 100


def thumbnail_changes(thumbnails: torch.Tensor, previous: torch.Tensor | None) -> torch.Tensor:
    """(N,) mean |L| change of each thumbnail from the one before (`previous` for the first; None: the video's first
    frame, whose change is infinite)."""
    if previous is None:
        return torch.cat([torch.tensor([math.inf]), thumbnail_changes(thumbnails[1:], thumbnails[0])])
    before = torch.cat([previous[None], thumbnails[:-1]])
    return (thumbnails - before).abs().mean((1, 2))


def find_cuts(changes: torch.Tensor) -> torch.Tensor:
    """(N,) bool: whether each frame starts a shot, from its change (see CUT_MIN_CHANGE); the first frame does."""
    padding = torch.full((CUT_WINDOW,), math.nan)
    windows = torch.cat([padding, changes.float(), padding]).unfold(0, 2 * CUT_WINDOW + 1, 1).clone()
    windows[:, CUT_WINDOW] = math.nan  # the frame itself is not its own neighbour
    windows[windows.isinf()] = math.nan  # nor is the first frame's infinite change
    neighbours = windows.nanmedian(1).values.nan_to_num(0.0)  # 0: no neighbours, the absolute bar alone
    return (changes >= CUT_MIN_CHANGE) & (changes > CUT_CONTRAST * neighbours)


@dataclass(frozen=True)
class ShotPlan:
    """The scan's result: which frames start a shot, and each frame's shot's scene vector."""

    cuts: torch.Tensor  # (frames,) bool
    features: torch.Tensor  # (frames, C)


def shot_vectors(features: torch.Tensor, cuts: torch.Tensor) -> torch.Tensor:
    """Each frame's shot's element-wise median scene vector, (frames, C); shots are the runs that start at cuts."""
    starts = cuts.nonzero().flatten().tolist()
    lengths = [end - start for start, end in zip(starts, [*starts[1:], len(cuts)], strict=True)]
    medians = torch.stack([shot.median(0).values for shot in features.split(lengths)])
    return medians.repeat_interleave(torch.tensor(lengths), dim=0)


class MotionCarry:
    """Carries the previous frame's colours along the optical flow into the current frame (one shot at a time)."""

    def __init__(self, blend: float = FLOW_BLEND):
        self.blend = blend
        self.flow = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_FAST)
        self.previous_gray: np.ndarray | None = None
        self.previous_ab: np.ndarray | None = None

    def __call__(self, ab: torch.Tensor, network_input: torch.Tensor, cut: bool) -> torch.Tensor:
        """ab (1, 2, h, w) of a frame whose network input is (1, 1, 2h, 2w) -> the blended ab."""
        gray = _half_size_gray(network_input)
        current = np.ascontiguousarray(ab[0].permute(1, 2, 0).cpu().numpy())
        carried = not cut and self.previous_gray is not None and self.previous_gray.shape == gray.shape
        if carried and min(gray.shape) >= FLOW_MIN_SIDE:
            current = self._blend(current, gray)
        self.previous_gray, self.previous_ab = gray, current
        return torch.from_numpy(current).permute(2, 0, 1)[None].to(ab.device)

    def _blend(self, current: np.ndarray, gray: np.ndarray) -> np.ndarray:
        backward = self.flow.calc(gray, self.previous_gray, None)  # current pixel -> its place in the previous frame
        forward = self.flow.calc(self.previous_gray, gray, None)
        height, width = gray.shape
        where = _pixel_grid(height, width) + backward
        warped = cv2.remap(self.previous_ab, where, None, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        round_trip = backward + cv2.remap(forward, where, None, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        inside = cv2.inRange(where, (0, 0), (width - 1, height - 1))
        consistent = cv2.compare(cv2.magnitude(round_trip[..., 0], round_trip[..., 1]), FLOW_CHECK_PIXELS, cv2.CMP_LT)
        blended = cv2.addWeighted(current, 1 - self.blend, warped, self.blend, 0)
        return np.where(cv2.bitwise_and(inside, consistent)[..., None] > 0, blended, current)


def _half_size_gray(network_input: torch.Tensor) -> np.ndarray:
    """The network input (1, 1, 2h, 2w), L in [0, 1], as 8-bit gray (h, w): 2x2 averages, rounded."""
    plane = network_input[0, 0].float().cpu().numpy()
    return cv2.convertScaleAbs(cv2.resize(plane, None, fx=0.5, fy=0.5, interpolation=cv2.INTER_AREA), alpha=255)


@functools.lru_cache(maxsize=4)  # a service that gets videos of many sizes keeps the last few
def _pixel_grid(height: int, width: int) -> np.ndarray:
    """(height, width, 2) float32 x, y of every pixel (read only: shared between calls)."""
    grid = np.stack(np.meshgrid(np.arange(width), np.arange(height)), -1).astype(np.float32)
    grid.flags.writeable = False
    return grid


def even_sides(rgb: np.ndarray) -> np.ndarray:
    """A frame (H, W, 3) with an odd side padded by a copy of its last row or column: H.264 in yuv420p (what browsers
    play) needs even sides, and a column of the photo's own is less visible than a black one."""
    height, width = rgb.shape[:2]
    return np.pad(rgb, ((0, height % 2), (0, width % 2), (0, 0)), mode="edge") if height % 2 or width % 2 else rgb


class Timeline:
    """Strictly increasing timestamps for decoded frames, in their time base. Frames come in display order, but their
    timestamps may not: containers that store no display times (AVI, ASF) give H.264 B-frames theirs out of order (put
    back in order among REORDER_FRAMES frames: the encoder waits that many), a raw H.264 stream has none (each frame
    follows the last by its duration), and recordings joined end to end (MPEG-TS joined with cat) start over: where
    two frames in a row go back further, what follows is shifted to follow on (one such frame alone is a glitch, put
    a tick after the last). Each was squeezed into a tick after the last frame, or shown for a tick."""

    def __init__(self, frame_ticks: int):
        self.frame_ticks = frame_ticks  # a frame's duration where it does not say
        self.pending: list[int] = []  # a heap of the timestamps not handed out yet
        self.shift, self.latest, self.last = 0, None, None
        self.held: tuple[int | None, int] | None = None  # the last frame added: placed once the next is known

    def add(self, pts: int | None, duration: int) -> None:
        if self.held is not None:
            self._place(*self.held, following=pts)
        self.held = pts, duration

    def next(self) -> int:
        """The next frame's timestamp; the frames added number at least one more than those handed out (or all
        were added: `finish`)."""
        pts = heapq.heappop(self.pending)
        self.last = pts if self.last is None or pts > self.last else self.last + 1  # the encoder needs them increasing
        return self.last

    def finish(self) -> None:
        if self.held is not None:
            self._place(*self.held, following=None)
            self.held = None

    def _place(self, pts: int | None, duration: int, following: int | None) -> None:
        step = duration or self.frame_ticks
        if pts is None:
            pts = 0 if self.latest is None else self.latest + step
        elif self._goes_back(pts + self.shift, step):
            if following is not None and self._goes_back(following + self.shift, step):  # started over
                self.shift += self.latest + step - (pts + self.shift)
                pts = self.latest + step - self.shift
            else:
                pts = self.latest + 1 - self.shift
        pts += self.shift
        self.latest = pts if self.latest is None else max(self.latest, pts)
        heapq.heappush(self.pending, pts)

    def _goes_back(self, pts: int, step: int) -> bool:
        """Whether `pts` lies further back than B-frames' reordering reaches."""
        return self.latest is not None and pts < self.latest - REORDER_FRAMES * step


class AudioShift:
    """A copied audio stream's packets shifted to follow on where the timestamps start over (`Timeline`): the muxer
    refused them ("Invalid argument")."""

    def __init__(self):
        self.shift, self.end = 0, None

    def follow_on(self, packet: av.Packet) -> None:
        if self.end is not None and packet.dts + self.shift < self.end - (packet.duration or 0):
            self.shift = self.end - packet.dts
        packet.dts += self.shift
        if packet.pts is not None:
            packet.pts += self.shift
        self.end = packet.dts + max(packet.duration or 0, 1)


class _Writer:
    """H.264 (yuv420p) video with the input's timestamps and display rotation, and its audio streams remuxed; odd
    sides are padded to even (`even_sides`)."""

    def __init__(self, path: Path, template: av.VideoStream, audio: list[av.AudioStream], rotation: int):
        self.path = path
        self.container = av.open(ffmpeg_path(path), "w", container_options={"movflags": "+faststart"})
        self.rate = template.average_rate or template.guessed_rate or 25
        self.video = self.container.add_stream("libx264", rate=self.rate, options=x264_options())
        width, height = template.codec_context.width, template.codec_context.height
        self.video.width, self.video.height = width + width % 2, height + height % 2
        self.video.pix_fmt = "yuv420p"
        if template.time_base:  # the encoder's ticks too: at 1 / the mean rate, a variable rate's frames collided
            self.video.time_base = self.video.codec_context.time_base = template.time_base
        # What the conversion from RGB does (BT.601, limited range), tagged: players guessed BT.709 for HD video
        tags = self.video.codec_context
        tags.colorspace, tags.color_range, tags.color_primaries, tags.color_trc = OUTPUT_COLOUR_TAGS
        if template.sample_aspect_ratio:  # an anamorphic (DVD, DV, broadcast) clip keeps its display shape
            self.video.codec_context.sample_aspect_ratio = template.sample_aspect_ratio
        if rotation:
            self.video.set_display_rotation(rotation)
        self.audio = {stream.index: self._audio_stream(stream) for stream in audio}
        self.samples_sent: dict[int, int] = {}  # per re-encoded audio stream: its start, then the samples sent
        self.audio_shifts: dict[int, AudioShift] = {}  # per copied audio stream
        self.timeline: Timeline | None = None  # made with the first frame, in its time base
        self.waiting: deque[tuple[av.VideoFrame, int]] = deque()  # frames and their durations, waiting for their time
        self.durations: dict[int, int] = {}  # of the frames sent to the encoder, by their pts

    def _audio_stream(self, stream: av.AudioStream) -> tuple[av.AudioStream, bool]:
        """(output stream, whether packets are copied: else decoded and re-encoded to AAC)."""
        codec = stream.codec_context.codec.canonical_name  # the format, not the decoder (mp3, not mp3float)
        suffix = self.path.suffix.lower()
        takes = codec in self.container.supported_codecs and not (suffix == ".mov" and codec in MOV_REFUSED_AUDIO)
        if takes and (codec in BROWSER_AUDIO_CODECS or suffix not in BROWSER_SUFFIXES):
            return self.container.add_stream_from_template(stream), True
        source = stream.codec_context
        rate = min((rate for rate in AAC_SAMPLE_RATES if rate >= source.sample_rate), default=max(AAC_SAMPLE_RATES))
        named = source.layout.name in AAC_LAYOUTS.values()  # PCM in Matroska says only "2 channels": mapped by count
        layout = source.layout.name if named else AAC_LAYOUTS.get(source.channels, "stereo")
        return self.container.add_stream("aac", rate=rate, layout=layout), False

    def audio_packet(self, packet: av.Packet) -> None:
        output, copied = self.audio[packet.stream.index]
        if copied:
            if packet.dts is not None:  # not the demuxer's end-of-stream marker
                self.audio_shifts.setdefault(packet.stream.index, AudioShift()).follow_on(packet)
                packet.stream = output
                self.container.mux(packet)
            return
        for frame in packet.decode():
            # numbered in samples from the source's start (a track that starts late keeps its offset)
            start = max(0, round(frame.time * frame.sample_rate)) if frame.time is not None else None
            sent = self.samples_sent.setdefault(packet.stream.index, start or 0)
            if start is not None and AUDIO_GAP_SECONDS < (start - sent) / frame.sample_rate <= MAX_AUDIO_GAP_SECONDS:
                sent = self._silence(output, frame, sent, start - sent)  # else what follows a gap played early
            frame.pts, frame.time_base = sent, Fraction(1, frame.sample_rate)
            self.samples_sent[packet.stream.index] = sent + frame.samples
            self.container.mux(output.encode(frame))

    def _silence(self, output: av.audio.stream.AudioStream, like: av.AudioFrame, pts: int, samples: int) -> int:
        """`samples` of silence encoded in `like`'s format from `pts`, at most a second a frame; the pts after them."""
        quiet = b"\x80" if like.format.name.startswith("u8") else b"\x00"  # (unsigned 8-bit's zero is 128)
        while samples > 0:
            count = min(samples, like.sample_rate)
            silence = av.AudioFrame(format=like.format.name, layout=like.layout.name, samples=count)
            for plane in silence.planes:
                plane.update(quiet * plane.buffer_size)
            silence.sample_rate, silence.pts, silence.time_base = like.sample_rate, pts, Fraction(1, like.sample_rate)
            self.container.mux(output.encode(silence))
            pts, samples = pts + count, samples - count
        return pts

    def frame(self, rgb: np.ndarray, source: av.VideoFrame) -> None:
        """Encodes a colorized frame (H, W, 3) 8-bit sRGB at `source`'s time, once REORDER_FRAMES + 1 more have come
        (`Timeline`)."""
        frame = av.VideoFrame.from_ndarray(even_sides(rgb), format="rgb24")
        frame.time_base = source.time_base or self.video.time_base
        if self.timeline is None:
            self.timeline = Timeline(max(1, round(1 / (self.rate * frame.time_base))))
        self.timeline.add(source.pts, source.duration or 0)
        self.waiting.append((frame, source.duration or 0))  # 0: unknown
        if len(self.waiting) > REORDER_FRAMES + 1:  # (the timeline places a frame once the next is known)
            self._encode(*self.waiting.popleft())

    def _encode(self, frame: av.VideoFrame, duration: int) -> None:
        frame.pts = self.timeline.next()
        self.durations[frame.pts] = duration
        self._mux_video(self.video.encode(frame))

    def _mux_video(self, packets: list[av.Packet]) -> None:
        """The encoder's packets, each with its frame's duration: x264 leaves them at 0, and an MP4 then showed its
        last frame for the mean frame's time (a pause before it: 2.12 s in place of 2.0)."""
        for packet in packets:
            packet.duration = self.durations.pop(packet.pts, 0)
            self.container.mux(packet)

    def finish(self) -> None:
        if self.timeline is not None:
            self.timeline.finish()
        while self.waiting:
            self._encode(*self.waiting.popleft())
        self._mux_video(self.video.encode(None))
        for output, copied in self.audio.values():
            if not copied:
                self.container.mux(output.encode(None))
        self.container.close()

    def abandon(self) -> None:
        """Closes after a failure (the caller deletes the file); errors here would hide the one that matters."""
        try:
            self.container.close()
        except (av.FFmpegError, OSError):
            pass


class _WriterOnFirstFrame:
    """A `_Writer` made when the first frame is decoded, which carries the display rotation (reading it first took
    another open and decode of the input: 30 ms at 480p, more than a frame's work). Audio packets read before then
    wait for it."""

    def __init__(self, make: Callable[[int], _Writer]):
        self.make, self.writer, self.waiting_audio = make, None, []

    def audio_packet(self, packet: av.Packet) -> None:
        if self.writer is None:
            self.waiting_audio.append(packet)
        else:
            self.writer.audio_packet(packet)

    def frame(self, rgb: np.ndarray, source: av.VideoFrame) -> None:
        if self.writer is None:
            self.writer = self.make(source.rotation)
            for packet in self.waiting_audio:
                self.writer.audio_packet(packet)
            self.waiting_audio = []
        self.writer.frame(rgb, source)

    def finish(self) -> None:
        self.writer.finish()

    def abandon(self) -> None:
        if self.writer is not None:
            self.writer.abandon()


class _BackgroundWriter:
    """Runs a writer's calls in order on a thread of its own, so that frames are encoded while the next batch is
    colorized (PyAV lets go of the GIL while x264 works: 480p video 1.05-1.16x the frames/s). At most
    WRITER_QUEUE_FRAMES calls wait; a call that fails is raised again by the next call made here."""

    def __init__(self, writer: _WriterOnFirstFrame):
        self.writer, self.error = writer, None
        self.calls = queue.Queue(maxsize=WRITER_QUEUE_FRAMES)
        self.thread = threading.Thread(target=self._work, name="letcolor-video-writer", daemon=True)
        self.thread.start()

    def _work(self) -> None:
        while (call := self.calls.get()) is not None:
            if self.error is None:  # after a failure, calls are taken and dropped until the end
                try:
                    call()
                except BaseException as error:  # raised again in the caller's thread
                    self.error = error

    def _submit(self, call: Callable[[], None]) -> None:
        self._raise_failure()
        self.calls.put(call)

    def _raise_failure(self) -> None:
        if self.error is not None:
            raise self.error

    def _stop(self) -> None:
        self.calls.put(None)
        self.thread.join()

    def audio_packet(self, packet: av.Packet) -> None:
        self._submit(functools.partial(self.writer.audio_packet, packet))

    def frame(self, rgb: np.ndarray, source: av.VideoFrame) -> None:
        self._submit(functools.partial(self.writer.frame, rgb, source))

    def finish(self) -> None:
        self._stop()
        self._raise_failure()
        self.writer.finish()

    def abandon(self) -> None:
        self._stop()
        self.writer.abandon()


def x264_options() -> dict[str, str]:
    """The encoder's options: H264_OPTIONS and X264_PARAMS, restricted to deterministic kernels where the CPU has
    AVX-512."""
    params = X264_PARAMS | (DETERMINISTIC_X264 if torch.backends.cpu.get_cpu_capability() == "AVX512" else {})
    return H264_OPTIONS | {"x264-params": ":".join(f"{name}={value}" for name, value in params.items())}


def _checked_paths(source: str | Path, destination: str | Path) -> tuple[Path, Path]:
    source, destination = Path(source), Path(destination)
    if source.is_dir():
        raise InvalidVideoError(f"{source}: a folder, not a video file")
    if not source.is_file():
        raise FileNotFoundError(f"{source}: no such file")
    if destination.suffix.lower() not in OUTPUT_SUFFIXES:
        raise ValueError(f"{destination}: the output must be one of {sorted(OUTPUT_SUFFIXES)} (H.264)")
    if destination.exists() and destination.resolve() == source.resolve():
        raise ValueError(f"{destination}: the output would overwrite the input")
    if destination.is_dir():
        raise IsADirectoryError(f"{destination}: a folder, not a file for the output")
    if not destination.parent.is_dir():
        raise FileNotFoundError(f"{destination.parent}: no such folder for the output")
    return source, destination


def _check_video_options(flow_blend, batch_size, max_frames, max_seconds) -> None:
    """ValueError naming the option: a batch size of 2.5 held the whole video as one batch, a NaN limit was none, a
    string a TypeError."""
    if not is_number(flow_blend) or not 0 <= flow_blend < 1:
        raise ValueError(f"flow_blend must be a number in [0, 1), got {flow_blend!r}")
    if not is_count(batch_size) or batch_size < 1:
        raise ValueError(f"batch_size must be a whole number >= 1, got {batch_size!r}")
    if max_frames is not None and (not is_count(max_frames) or max_frames < 1):
        raise ValueError(f"max_frames must be a whole number >= 1 or None, got {max_frames!r}")
    if max_seconds is not None and (not is_number(max_seconds) or not max_seconds > 0):
        raise ValueError(f"max_seconds must be a number > 0 or None, got {max_seconds!r}")


def colorize_video(
    colorizer: Colorizer,
    source: str | Path,
    destination: str | Path,
    *,
    mode: Mode | str = Mode.SHOT,
    use_global: bool = True,
    global_strength: float = 1.0,
    reference: ImageSource | Reference | None = None,
    palette_strength: float = 0.0,
    max_side: int | None = DEFAULT_MAX_SIDE,
    refine: bool = Options.refine,
    flow_blend: float = FLOW_BLEND,
    batch_size: int = DEFAULT_BATCH_SIZE,
    max_frames: int | None = None,
    max_seconds: float | None = None,
    progress: ProgressCallback | None = None,
) -> VideoInfo:
    """Colorizes a video file into `destination` (.mp4, .m4v, .mov or .mkv; H.264 yuv420p, audio copied).

    The options are those of `Colorizer.batch`, with the reference's scene vector used for every frame (a reference
    photo read here issues its warnings, such as an animation's first frame used, as UserWarnings), and:
    mode: "shot" (one scene vector per shot, colours carried along the motion) or "frame" (each frame on its own).
    flow_blend: in [0, 1), the weight of the colours carried along the motion in "shot" mode (0: no carrying).
    batch_size: frames per network batch.
    max_frames, max_seconds: refuse longer videos (InvalidVideoError; None: no limit), from the header, and as the
        frames are decoded (a raw H.264 stream declares neither) and the sound is read (an AVI's PCM declares none).
    progress: called with (frames done, frames to do in all passes, 0 if unknown) as frames are done.
    Returns the input's VideoInfo. Raises InvalidVideoError (a ValueError) for an input that is not a usable video,
    ValueError for bad options; the destination is only replaced once the output is complete."""
    if not isinstance(mode, str) or mode not in set(Mode):  # (a list from an API call: not a TypeError)
        raise ValueError(f"mode must be one of {[m.value for m in Mode]}, got {mode!r}")
    mode = Mode(mode)
    options = Options(use_global, global_strength, reference, palette_strength, max_side, refine)
    _check_video_options(flow_blend, batch_size, max_frames, max_seconds)
    source, destination = _checked_paths(source, destination)
    reference = _read_reference(colorizer, reference)
    with torch.inference_mode():
        with _open(source) as container:  # the header and the first pass share one opening (each decodes frames)
            info = _info(container, source)
            if max_frames is not None and info.frames > max_frames:
                raise InvalidVideoError(f"{source}: {info.frames} frames, over the limit of {max_frames} frames")
            if max_seconds is not None and info.duration > max_seconds:
                raise InvalidVideoError(f"{source}: {info.duration:.1f} s, over the limit of {max_seconds:g} s")
            counter = _Counter(progress, info, 2 if mode == Mode.SHOT else 1, source, max_frames, max_seconds)
            plan = None
            if mode == Mode.SHOT:
                plan = _plan(colorizer, container, source, batch_size, reference, counter)
        partial = new_partial_file(destination)
        try:
            _render(colorizer, source, partial, options, reference, plan, flow_blend, batch_size, counter)
            os.replace(partial, destination)
        except av.FFmpegError as error:  # the encoder's; its message would name the partial output's path
            raise InvalidVideoError(f"{source}: the colorized video could not be encoded ({error.strerror})") from error
        finally:
            partial.unlink(missing_ok=True)
    return info


def _read_reference(colorizer: Colorizer, reference: ImageSource | Reference | None) -> Reference | None:
    """`Colorizer.reference`, its warnings (only an animation's first frame used) issued as UserWarnings where it was
    read here (a Reference read before: its reader has them)."""
    read = colorizer.reference(reference)
    if read is not None and read is not reference:
        for warning in read.warnings:
            warnings.warn(warning, UserWarning, stacklevel=3)
    return read


class _Counter:
    """Counts frames for the progress callback, and checks every decoded frame: within max_frames and max_seconds,
    of the size the header declared (a stream whose size changes could pass the header's limits), and, once decoding
    ends, that the video was not cut short (a truncated file decodes as a shorter video): as many frames as the header
    declared, or frames that span the declared duration. The header's count includes frames that are never shown
    (those an MP4 edit list trims, an AVI's empty drop-frame chunks), so a video whose frames reach the end of its
    duration is whole."""

    def __init__(self, callback: ProgressCallback | None, info: VideoInfo, passes: int, source: Path,
                 max_frames: int | None, max_seconds: float | None):  # fmt: skip
        self.callback, self.info, self.source = callback, info, source
        self.max_frames, self.max_seconds = max_frames, max_seconds
        self.total, self.done = info.frames * passes, 0

    def frames(self, frames: Generator[av.VideoFrame]) -> Iterator[av.VideoFrame]:
        """`frames`, checked; on an error the decoder is closed at once (the error's traceback, which a server may
        keep, would otherwise hold it open with its frame buffers, and the refused frame)."""
        with closing(frames):
            count, first, last, summed = 0, None, None, 0.0
            for count, frame in enumerate(frames, 1):
                first, seconds = first if first is not None else frame.time, self._frame_seconds(frame)
                summed += seconds
                # from the first frame's time, and from the frames' durations (times that start over, none at all)
                span = frame.time - first + seconds if frame.time is not None and first is not None else 0.0
                if problem := self._problem(frame, count, max(span, summed) - seconds / 2):  # (half: rounding)
                    del frame  # not kept alive by the error's traceback
                    raise InvalidVideoError(f"{self.source}: {problem}")
                last = frame.time
                yield frame
        if count < self.info.frames and not self._reaches_the_end(first, last):
            raise InvalidVideoError(
                f"{self.source}: the video ends after {count} of the {self.info.frames} frames its header declares "
                "(truncated or damaged)"
            )

    def _reaches_the_end(self, first: float | None, last: float | None) -> bool:
        """Whether frames shown from `first` to `last` (seconds) reach the end of the declared duration, to half a
        frame: a truncated file loses its end. One whose start lacks frames (a recording begun between keyframes,
        decoded from the next one, as players show it) is whole."""
        fps, duration = float(self.info.fps), self.info.duration
        if first is None or last is None or not fps or not duration:
            return False
        start = self.info.start if self.info.start is not None else first
        return last + 1 / fps >= start + duration - 0.5 / fps

    def _problem(self, frame: av.VideoFrame, count: int, seconds_shown: float) -> str | None:
        if self.max_frames is not None and count > self.max_frames:
            return f"more than the limit of {self.max_frames} frames"
        if self.max_seconds is not None and seconds_shown > self.max_seconds:
            return f"longer than the limit of {self.max_seconds:g} s"
        width, height = self.info.width, self.info.height
        if (frame.width, frame.height) != (width, height):
            return (
                f"frame {count} is {frame.width}x{frame.height}, not the {width}x{height} of the video's header "
                "(the frame size changes)"
            )
        return None

    def _frame_seconds(self, frame: av.VideoFrame) -> float:
        """How long the frame is shown: its duration, else a frame at the header's rate."""
        if frame.duration and frame.time_base:
            return float(frame.duration * frame.time_base)
        return 1 / float(self.info.fps) if self.info.fps else 0.0

    def add(self, frames: int) -> None:
        self.done += frames
        if self.callback is not None:
            self.callback(self.done, self.total)


def _batch_features(colorizer: Colorizer, global_inputs: torch.Tensor, reference: Reference | None):
    if reference is not None:
        return reference.features.expand(len(global_inputs), -1)
    return colorizer.network.global_output(global_inputs.to(colorizer.device)).features


def plan_shots(
    colorizer: Colorizer,
    source: str | Path,
    batch_size: int = DEFAULT_BATCH_SIZE,
    reference: Reference | None = None,
) -> ShotPlan:
    """The shot mode's first pass: every frame's cut flag and scene vector (the reference's, if given: see
    `Colorizer.reference`), then each shot's median vector."""
    source, reference = Path(source), colorizer.reference(reference)
    with _open(source) as container:
        counter = _Counter(None, _info(container, source), 1, source, None, None)
        return _plan(colorizer, container, source, batch_size, reference, counter)


def _plan(
    colorizer: Colorizer,
    container: av.container.InputContainer,
    source: Path,
    batch_size: int,
    reference: Reference | None,
    counter: "_Counter",
) -> ShotPlan:
    changes, features, previous, reformatter = [], [], None, VideoReformatter()
    for batch in _batches(counter.frames(_decoded(container, source)), batch_size):
        global_inputs = torch.cat([scan_input(frame, reformatter, source) for frame in batch])
        thumbnails = _thumbnails(global_inputs)
        changes.append(thumbnail_changes(thumbnails, previous))
        features.append(_batch_features(colorizer, global_inputs, reference))
        previous = thumbnails[-1]
        counter.add(len(batch))
    if not changes:
        raise InvalidVideoError(f"{source}: the video has no frames")
    cuts = find_cuts(torch.cat(changes))
    return ShotPlan(cuts, shot_vectors(torch.cat(features), cuts))


def _render(colorizer, source, destination, options, reference, plan, flow_blend, batch_size,
            counter) -> None:  # fmt: skip
    """The colorizing pass: decode, colorize a batch, carry colours along the motion, encode; audio remuxed."""
    carry = MotionCarry(flow_blend) if plan is not None and flow_blend > 0 else None
    index, reformatter = 0, VideoReformatter()
    with _open(source) as container:
        stream = video_stream(container)
        _check_stream(stream, source)
        stream.thread_type = "AUTO"
        audio = _known_audio(container)
        writer = _BackgroundWriter(_WriterOnFirstFrame(lambda rotation: _Writer(destination, stream, audio, rotation)))
        completed = False
        try:
            frames = _demux(container, stream, writer, source, counter.max_seconds)
            for batch in _batches(counter.frames(frames), batch_size):
                if plan is not None and index + len(batch) > len(plan.cuts):
                    raise InvalidVideoError(f"{source}: decoded more frames than in the first pass")
                pixels = [_rgb(frame, reformatter, source) for frame in batch]
                # the shot mode's scene vectors come from the first pass: no global input needed
                prepared = [colorizer.prepare(each, options.max_side, scene=plan is None) for each in pixels]
                if plan is None:
                    global_inputs = torch.cat([each.global_input for each in prepared])
                    features = _batch_features(colorizer, global_inputs, reference)
                else:
                    features = plan.features[index : index + len(batch)]
                ab = colorizer.ab_from_features(prepared, features, options, reference)
                for offset, (frame, each, each_ab) in enumerate(zip(batch, prepared, ab, strict=True)):
                    if carry is not None:
                        each_ab = carry(each_ab, each.network_input, bool(plan.cuts[index + offset]))
                    writer.frame(compose_rgb_8bit(each.lightness, each_ab, each.luma), frame)
                index += len(batch)
                counter.add(len(batch))
            if index == 0:
                raise InvalidVideoError(f"{source}: the video has no frames")
            writer.finish()
            completed = True
        finally:
            if not completed:
                writer.abandon()


def _demux(
    container, stream, writer: _WriterOnFirstFrame, source: Path, max_seconds: float | None
) -> Iterator[av.VideoFrame]:
    """The video's frames, in order; audio packets go to the writer as they are read, each within `max_seconds`."""
    sound_starts = {}
    for packet in _decoding_errors(source, container.demux(stream, *_known_audio(container))):
        if packet.stream.type == "audio":
            if max_seconds is not None:
                _check_sound_length(packet, sound_starts, max_seconds, source)
            writer.audio_packet(packet)
            continue
        yield from _decoding_errors(source, _decoded_packet(packet))


def _check_sound_length(packet: av.Packet, starts: dict[int, int], max_seconds: float, source: Path) -> None:
    """InvalidVideoError where an audio packet ends over `max_seconds` after its stream's first packet began (`starts`,
    by stream): an AVI's PCM sound declares no duration (the header gave the video's, and 60 s passed a 20 s limit)."""
    time = packet.pts if packet.pts is not None else packet.dts
    if time is None:
        return
    start = starts.setdefault(packet.stream.index, time)
    if float((time + (packet.duration or 0) - start) * packet.time_base) > max_seconds + SOUND_LIMIT_SLACK:
        raise InvalidVideoError(f"{source}: its sound is longer than the limit of {max_seconds:g} s")


def _known_audio(container: av.container.InputContainer) -> list[av.AudioStream]:
    """The audio streams kept: those of a codec that FFmpeg knows (another has no codec context to copy)."""
    return [stream for stream in container.streams.audio if stream.codec_context is not None]


def _decoded_packet(packet: av.Packet) -> Iterator[av.VideoFrame]:
    yield from packet.decode()  # (a generator: a corrupt packet's error is raised inside `_decoding_errors`)


__all__ = [
    "InvalidVideoError",
    "Mode",
    "VideoInfo",
    "colorize_video",
    "is_video_path",
    "plan_shots",
    "probe",
    "read_frames",
]
