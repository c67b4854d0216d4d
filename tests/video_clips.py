"""Clips with sound for the video tests: a video remuxed with a sine soundtrack, and its audio packets."""

from pathlib import Path

import av
import numpy as np

SAMPLE_RATE = 44100


def with_sine(video: Path, path: Path, codec: str = "aac", seconds: float = 1.2) -> Path:
    """The video's packets remuxed with a 440 Hz sine soundtrack encoded with `codec`."""
    with av.open(str(video)) as source, av.open(str(path), "w") as output:
        video_out = output.add_stream_from_template(source.streams.video[0])
        audio = output.add_stream(codec, rate=SAMPLE_RATE)
        for packet in source.demux(video=0):
            if packet.dts is not None:
                packet.stream = video_out
                output.mux(packet)
        t = np.arange(int(SAMPLE_RATE * seconds)) / SAMPLE_RATE
        sine = (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)[None]
        for start in range(0, sine.shape[1], 1024):
            frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(sine[:, start : start + 1024]), "flt", "mono")
            frame.sample_rate, frame.pts = SAMPLE_RATE, start
            output.mux(audio.encode(frame))
        output.mux(audio.encode(None))
    return path


def audio_packets(path: Path) -> list[bytes]:
    with av.open(str(path)) as container:
        return [bytes(packet) for packet in container.demux(audio=0) if packet.size]
