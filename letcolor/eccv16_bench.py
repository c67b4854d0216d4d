"""`python -m letcolor.eccv16_bench`: the paper-size letcolor network on the default engine against the ECCV16
colorization network of Zhang, Isola and Efros (Colorful Image Colorization), end to end on a 256x256 JPEG, in one
run.

ECCV16 is rebuilt here layer for layer after its authors' PyTorch port (random weights: speed does not depend on
them) and run as their demo runs it: L resized to 256x256, the network, the annealed-mean a,b (a 1x1 convolution
from the 313 bins) upsampled 4x, then to the photo's size and joined with its own L. Both pipelines share
letcolor's surroundings (decoding, L, conversion to RGB, encoding), so that only the networks differ. ECCV16 runs in
each CPU setting of `SETTINGS` (torch float32, torch bfloat16 channels-last, ONNX Runtime float32); the table gives
each one's median and letcolor's time as a share of it.
"""

import argparse
import io
import statistics
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from letcolor.bench import ACCURACY_PHOTOS, BENCH_PHOTO, random_model, write_inputs
from letcolor.fullres import compose, lightness
from letcolor.images import image_pixels, load_image
from letcolor.pipeline import Colorizer

SIZE = 256
BINS = 313
SETTINGS = ("torch float32", "torch bfloat16 channels-last", "onnxruntime float32")


def convs(channels: list[int], stride_last: int = 1, dilation: int = 1) -> list[nn.Module]:
    """3x3 convolutions with ReLU from channels[0] through channels[1:], the last with `stride_last`, then BatchNorm."""
    layers = []
    for index, (inputs, outputs) in enumerate(zip(channels, channels[1:], strict=False)):
        stride = stride_last if index == len(channels) - 2 else 1
        layers += [nn.Conv2d(inputs, outputs, 3, stride, dilation, dilation), nn.ReLU(inplace=True)]
    return [*layers, nn.BatchNorm2d(channels[-1])]


class ECCV16(nn.Module):
    """Zhang et al.'s network: normalized L (N, 1, 256, 256) -> a,b (N, 2, 256, 256) in Lab units."""

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(
            *convs([1, 64, 64], stride_last=2),
            *convs([64, 128, 128], stride_last=2),
            *convs([128, 256, 256, 256], stride_last=2),
            *convs([256, 512, 512, 512]),
            *convs([512, 512, 512, 512], dilation=2),
            *convs([512, 512, 512, 512], dilation=2),
            *convs([512, 512, 512, 512]),
            nn.ConvTranspose2d(512, 256, 4, 2, 1),
            nn.ReLU(inplace=True),
            *convs([256, 256, 256])[:-1],
            nn.Conv2d(256, BINS, 1),
        )
        self.annealed_mean = nn.Conv2d(BINS, 2, 1, bias=False)

    def forward(self, l_normalized: torch.Tensor) -> torch.Tensor:
        ab = self.annealed_mean(F.softmax(self.features(l_normalized), dim=1)) * 110
        return F.interpolate(ab, scale_factor=4, mode="bilinear")


def eccv16_runner(setting: str, directory: Path):
    """ECCV16 in a CPU setting, as a function from normalized L to float32 a,b."""
    network = ECCV16().eval()
    if setting == "torch float32":
        return lambda l: network(l)
    if setting == "onnxruntime float32":
        return onnxruntime_runner(network, directory / "eccv16.onnx")
    network = network.to(memory_format=torch.channels_last, dtype=torch.bfloat16)
    return lambda l: network(l.to(memory_format=torch.channels_last, dtype=torch.bfloat16)).float()


def onnxruntime_runner(network: nn.Module, path: Path):
    import onnxruntime

    torch.onnx.export(network, (torch.zeros(1, 1, SIZE, SIZE),), str(path), input_names=["l"], dynamo=False)
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")  # as letcolor's engine
    session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return lambda l: torch.from_numpy(session.run(None, {"l": l.numpy()})[0])


def eccv16_end_to_end(run, path: Path) -> None:
    full = lightness(image_pixels(load_image(path)))  # (1, 1, H, W), L in [0, 100]
    small = F.interpolate(full, size=(SIZE, SIZE), mode="bilinear", antialias=True)
    compose(full, run((small - 50) / 100), None).save(io.BytesIO(), format="JPEG", quality=95)


def letcolor_end_to_end(colorizer: Colorizer, path: Path) -> None:
    colorizer(path).image.save(io.BytesIO(), format="JPEG", quality=95)


def median_seconds(function, repeats: int, warmups: int) -> float:
    for _ in range(warmups):
        function()  # oneDNN picks its kernels
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        seconds.append(time.perf_counter() - start)
    return statistics.median(seconds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=20, help="timed runs per pipeline (median; default 20)")
    parser.add_argument("--warmups", type=int, default=3, help="untimed runs first, per pipeline (default 3)")
    parser.add_argument("--threads", type=int, default=2, help="CPU threads (default 2)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as directory, torch.inference_mode():
        path = write_inputs(BENCH_PHOTO, [(SIZE, SIZE)], Path(directory))[SIZE, SIZE]
        colorizer = Colorizer(random_model(1.0, ACCURACY_PHOTOS))
        ours = median_seconds(lambda: letcolor_end_to_end(colorizer, path), args.repeats, args.warmups)
        runners = {setting: eccv16_runner(setting, Path(directory)) for setting in SETTINGS}
        theirs = {
            s: median_seconds(lambda r=run: eccv16_end_to_end(r, path), args.repeats, args.warmups)
            for s, run in runners.items()
        }
    print(f"{SIZE}x{SIZE} JPEG in, JPEG out, {args.threads} threads, median of {args.repeats} runs")
    print("| pipeline | ms | letcolor / this |\n|---|---|---|")
    print(f"| letcolor, paper-size network (width 1.0), engine {colorizer.engine} | {ours * 1000:.1f} | 1.00 |")
    for setting, seconds in theirs.items():
        print(f"| ECCV16, {setting} | {seconds * 1000:.1f} | {ours / seconds:.2f} |")


if __name__ == "__main__":
    main()
