"""Clips with sound for the video tests: a video remuxed with a sine soundtrack, and its audio packets."""

import io
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from PIL import Image

from letcolor.video_bench import write_clip

SAMPLE_RATE = 44100


def with_sine(video: Path, path: Path, codec: str = "aac", seconds: float = 1.2, rate: int = SAMPLE_RATE,
              layout: str = "mono") -> Path:  # fmt: skip
    """The video's packets remuxed with a 440 Hz sine soundtrack encoded with `codec` (Opus: at 48000 Hz only), the
    same in each channel of `layout`."""
    with av.open(str(video)) as source, av.open(str(path), "w") as output:
        video_out = output.add_stream_from_template(source.streams.video[0])
        audio = output.add_stream(codec, rate=rate, layout=layout)
        for packet in source.demux(video=0):
            if packet.dts is not None:
                packet.stream = video_out
                output.mux(packet)
        t = np.arange(int(rate * seconds)) / rate
        channels = av.AudioLayout(layout).nb_channels
        sine = np.tile((0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32), (channels, 1))
        for start in range(0, sine.shape[1], 1024):
            frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(sine[:, start : start + 1024]), "fltp", layout)
            frame.sample_rate, frame.pts = rate, start
            output.mux(audio.encode(frame))
        output.mux(audio.encode(None))
    return path


def audio_packets(path: Path) -> list[bytes]:
    with av.open(str(path)) as container:
        return [bytes(packet) for packet in container.demux(audio=0) if packet.size]


def truncated_faststart(video: Path, path: Path, keep: float = 0.6) -> Path:
    """The video remuxed with its index in front (`movflags +faststart`), then cut after `keep` of its bytes: the
    index still declares every frame, the data holds only the first ones."""
    whole = path.with_name(f"whole-{path.name}")
    with av.open(str(video)) as source, av.open(str(whole), "w", options={"movflags": "+faststart"}) as output:
        stream = output.add_stream_from_template(source.streams.video[0])
        for packet in source.demux(video=0):
            if packet.dts is not None:
                packet.stream = stream
                output.mux(packet)
    data = whole.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    whole.unlink()
    return path


def matroska(video: Path, path: Path, codec: str = "libx264") -> Path:
    """The video re-encoded into Matroska (or WebM, by `path`'s suffix): the header declares the Segment's size in
    bytes, not a frame count."""
    with av.open(str(video)) as source, av.open(str(path), "w") as output:
        stream = output.add_stream(codec, rate=10)
        stream.width, stream.height, stream.pix_fmt = (
            source.streams.video[0].width,
            source.streams.video[0].height,
            "yuv420p",
        )
        for frame in source.decode(video=0):
            output.mux(stream.encode(frame.reformat(format="yuv420p")))
        output.mux(stream.encode(None))
    return path


def size_switching(path: Path, segments: list[tuple[int, int, int]]) -> Path:
    """An MPEG-TS stream of H.264 segments (width, height, frames) one after the other, at 10 frames/s: where the
    first segment is long enough, its header says the first segment's size."""
    pts = 0
    with path.open("wb") as stream:
        for index, (width, height, frames) in enumerate(segments):
            segment = path.with_name(f"segment-{index}.ts")
            with av.open(str(segment), "w") as output:
                video = output.add_stream("libx264", rate=10, options={"preset": "ultrafast"})
                video.width, video.height, video.pix_fmt = width, height, "yuv420p"
                for number in range(frames):
                    gray = np.full((height, width, 3), 40 + 5 * number % 200, np.uint8)
                    frame = av.VideoFrame.from_ndarray(gray, format="rgb24")
                    frame.pts, pts = pts, pts + 1
                    output.mux(video.encode(frame))
                output.mux(video.encode(None))
            stream.write(segment.read_bytes())
            segment.unlink()
    return path


def display_rotation(path: Path) -> int:
    """The rotation (degrees, counter-clockwise) that players apply to the video's frames, as phones record it."""
    with av.open(str(path)) as container:
        first = next(container.decode(video=0), None)
        return first.rotation if first is not None else 0


def edit_listed(video: Path, path: Path, trimmed: int = 3) -> Path:
    """The MP4 remuxed with its timestamps moved `trimmed` frames earlier: the muxer writes an edit list that hides
    the first frames (as `ffmpeg -ss ... -c copy` does), so the header counts more frames than the video shows."""
    with av.open(str(video)) as source, av.open(str(path), "w") as output:
        stream = output.add_stream_from_template(source.streams.video[0])
        shift = None
        for packet in source.demux(video=0):
            if packet.dts is not None:
                shift = shift if shift is not None else trimmed * packet.duration
                packet.pts, packet.dts, packet.stream = packet.pts - shift, packet.dts - shift, stream
                output.mux(packet)
    return path


def with_dropped_frame(path: Path, frames: int = 11, dropped: int = 1) -> Path:
    """An AVI of MPEG-4 frames at 10 frames/s in which frame `dropped` is missing: the muxer writes an empty chunk
    in its place (as capture tools do for a frame they dropped), which the header counts and no decoder shows."""
    with av.open(str(path), "w") as output:
        stream = output.add_stream("mpeg4", rate=10)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        for index in (i for i in range(frames) if i != dropped):
            image = np.full((48, 64, 3), 20 * index, np.uint8)
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            frame.pts = index
            output.mux(stream.encode(frame))
        output.mux(stream.encode(None))
    return path


def with_stall(path: Path, rate: int = 30, missing: range = range(10, 30), frames: int = 50) -> Path:
    """An MP4 at `rate` frames/s (time base 1/90000) whose camera skipped the `missing` frames: a variable frame rate,
    as phones and screen recorders write (a mean rate of 18 here)."""
    with av.open(str(path), "w") as output:
        stream = output.add_stream("libx264", rate=rate, options={"preset": "ultrafast"})
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        stream.codec_context.time_base = Fraction(1, 90000)
        for index in (i for i in range(frames) if i not in missing):
            frame = av.VideoFrame.from_ndarray(np.full((48, 64, 3), 4 * index, np.uint8), format="rgb24")
            frame.pts, frame.time_base = index * 90000 // rate, Fraction(1, 90000)
            output.mux(stream.encode(frame))
        output.mux(stream.encode(None))
    return path


def anamorphic(path: Path, pixel_aspect: Fraction = Fraction(4, 3)) -> Path:
    """A 64x48 H.264 MP4 whose pixels are `pixel_aspect` wide (shown at 16:9), as DVD and DV clips are stored."""
    with av.open(str(path), "w") as output:
        stream = output.add_stream("libx264", rate=10, options={"preset": "ultrafast"})
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        stream.codec_context.sample_aspect_ratio = pixel_aspect
        for index in range(6):
            frame = av.VideoFrame.from_ndarray(np.full((48, 64, 3), 30 * index, np.uint8), format="rgb24")
            frame.pts, frame.time_base = index, Fraction(1, 10)
            output.mux(stream.encode(frame))
        output.mux(stream.encode(None))
    return path


def with_pcm(video: Path, path: Path, track: np.ndarray, start: int = 0, skipped: range = range(0)) -> Path:
    """The video's packets remuxed into an MKV with the mono 16-bit `track` (1, samples) as PCM from sample `start`,
    in frames of 1024 samples; the frames whose first sample (in `track`) is in `skipped` left out (a gap: no
    packets)."""
    with av.open(str(video)) as source, av.open(str(path), "w") as output:
        video_out = output.add_stream_from_template(source.streams.video[0])
        audio = output.add_stream("pcm_s16le", rate=SAMPLE_RATE)
        for packet in source.demux(video=0):
            if packet.dts is not None:
                packet.stream = video_out
                output.mux(packet)
        for first in range(0, track.shape[1], 1024):
            if first in skipped:
                continue
            frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(track[:, first : first + 1024]), "s16", "mono")
            frame.sample_rate, frame.time_base, frame.pts = SAMPLE_RATE, Fraction(1, SAMPLE_RATE), start + first
            output.mux(audio.encode(frame))
        output.mux(audio.encode(None))
    return path


def with_late_pcm(video: Path, path: Path, start: float = 1.0) -> Path:
    """The video's packets remuxed into an MKV with a PCM sine soundtrack that starts `start` seconds in."""
    sine = (0.3 * 32767 * np.sin(2 * np.pi * 440 * np.arange(SAMPLE_RATE) / SAMPLE_RATE)).astype(np.int16)[None]
    return with_pcm(video, path, sine, start=round(start * SAMPLE_RATE))


def with_gap_and_click(video: Path, path: Path, gap: tuple[float, float], click: float, seconds: float) -> Path:
    """The video's packets remuxed into an MKV with a silent PCM soundtrack of `seconds`, with no packets in the `gap`
    (as after a recorder's pause) and a click at `click` seconds."""
    track = np.zeros((1, round(seconds * SAMPLE_RATE)), np.int16)
    track[:, round(click * SAMPLE_RATE) : round(click * SAMPLE_RATE) + 200] = 30000
    return with_pcm(video, path, track, skipped=range(round(gap[0] * SAMPLE_RATE), round(gap[1] * SAMPLE_RATE)))


def with_unknown_codec(video: Path, path: Path, track: str) -> Path:
    """The video in Matroska with PCM sound, the audio or the video track's codec ID renamed to one that FFmpeg does
    not know (PyAV then gives the stream no codec context)."""
    data = with_sine(video, path.with_name(f"pcm-{path.name}"), "pcm_s16le").read_bytes()
    known, unknown = {"audio": (b"A_PCM/INT/LIT", b"A_QQQ/INT/LIT"), "video": (b"V_MPEG4/ISO/AVC", b"V_QQQQQ/ISO/AVC")}[
        track
    ]
    assert known in data
    path.write_bytes(data.replace(known, unknown))
    return path


def re_encoded(video: Path, path: Path, container: str | None = None, bframes: int = 0, audio: str | None = None,
               seconds_of_audio: float = 0.0, options: dict | None = None) -> Path:  # fmt: skip
    """The video's frames re-encoded in H.264 at 10 frames/s into `container` (FFmpeg's format name, else by the
    suffix), with up to `bframes` B-frames (and x264 `options`), and `seconds_of_audio` of a 440 Hz sine in codec
    `audio` if given."""
    with av.open(str(video)) as source, av.open(str(path), "w", format=container) as output:
        x264 = {"preset": "veryfast", "bf": str(bframes), **(options or {})}
        stream = output.add_stream("libx264", rate=10, options=x264)
        stream.width, stream.height = source.streams.video[0].width, source.streams.video[0].height
        stream.pix_fmt = "yuv420p"
        sound = output.add_stream(audio, rate=48000, layout="mono") if audio else None
        for index, frame in enumerate(source.decode(video=0)):
            frame = frame.reformat(format="yuv420p")
            frame.pts, frame.time_base = index, Fraction(1, 10)
            output.mux(stream.encode(frame))
        output.mux(stream.encode(None))
        if sound is not None:
            samples = int(48000 * seconds_of_audio)
            sine = (0.3 * np.sin(2 * np.pi * 440 * np.arange(samples) / 48000)).astype(np.float32)[None]
            for start in range(0, samples, 1024):
                frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(sine[:, start : start + 1024]), "fltp", "mono")
                frame.sample_rate, frame.pts = 48000, start
                output.mux(sound.encode(frame))
            output.mux(sound.encode(None))
    return path


def song_with_cover(path: Path, cover: Path) -> Path:
    """A second of AAC sound with `cover` (a photo) as its cover art, an attached picture stream, as an M4A is."""
    with av.open(str(path), "w", format="mp4") as output:
        sound = output.add_stream("aac", rate=SAMPLE_RATE, layout="mono")
        picture = output.add_stream("png")
        picture.width, picture.height, picture.pix_fmt = 64, 64, "rgb24"
        picture.disposition = av.stream.Disposition.attached_pic
        png = io.BytesIO()
        Image.open(cover).convert("RGB").resize((64, 64)).save(png, "PNG")
        packet = av.Packet(png.getvalue())
        packet.stream, packet.pts, packet.dts, packet.time_base = picture, 0, 0, Fraction(1, 90000)
        packet.is_keyframe = True
        output.mux(packet)
        for start in range(0, SAMPLE_RATE, 1024):
            frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), "fltp", "mono")
            frame.sample_rate, frame.pts = SAMPLE_RATE, start
            output.mux(sound.encode(frame))
        output.mux(sound.encode(None))
    return path


def begun_between_keyframes(video: Path, path: Path, dropped: int = 2) -> Path:
    """The video re-encoded with a keyframe every 5 frames and no B-frames, then remuxed without its first `dropped`
    packets: its first frames cannot be decoded (a recording begun between keyframes); the header declares the rest."""
    encoded = re_encoded(video, path.with_name(f"gop-{path.name}"), options={"g": "5", "bf": "0"})
    with av.open(str(encoded)) as source, av.open(str(path), "w") as output:
        stream = output.add_stream_from_template(source.streams.video[0])
        for index, packet in enumerate(packet for packet in source.demux(video=0) if packet.dts is not None):
            if index >= dropped:
                packet.stream = stream
                output.mux(packet)
    encoded.unlink()
    return path


def slow_clip(path: Path) -> Path:
    """400 frames of 640x480 at 30 frames/s: with refinement, far longer to colorize than the cancel tests wait."""
    ramp = np.linspace(0, 255, 640, dtype=np.uint8)[None, :, None].repeat(480, axis=0).repeat(3, axis=2)
    write_clip(path, (np.roll(ramp, 4 * index, axis=1) for index in range(400)), fps=30)
    return path
