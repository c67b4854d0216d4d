"""PSNR against the number of colour hints, as a PNG line chart, from `python -m letcolor evaluate --hints ...` reports.

    python -m letcolor.hint_plot report-scenes.json report-everyday.json -o hints.png

One solid line per report for the model and a dashed one for the propagation baseline measured in the same run;
N = 0 is the model without hints (both lines start there). Drawn with Pillow alone.
"""

import argparse
import json
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from letcolor.evaluate import HINTED, MODEL, PROPAGATION
from letcolor.outputs import save_image_whole

SIZE, MARGIN = (760, 440), (70, 30, 230, 50)  # left, top, right, bottom
COLOURS = [(31, 119, 180), (214, 39, 40), (44, 160, 44), (148, 103, 189)]
DASH = 8


def curves(report: dict) -> dict[str, list[tuple[int, float]]]:
    """{"model": [(N, PSNR), ...], "propagation baseline": [...]}, N = 0 being the model without hints."""
    averages = report["averages"]
    counts = sorted(int(method.removeprefix(HINTED)) for method in averages if method.startswith(HINTED))
    start = (0, averages[MODEL]["psnr"])
    return {
        "model": [start, *((n, averages[f"{HINTED}{n}"]["psnr"]) for n in counts)],
        "propagation baseline": [start, *((n, averages[f"{PROPAGATION}{n}"]["psnr"]) for n in counts)],
    }


def plot(reports: dict[str, dict], path: Path) -> None:
    """`reports`: {name shown in the legend: evaluate report}."""
    lines = {(name, kind): points for name, report in reports.items() for kind, points in curves(report).items()}
    values = [psnr for points in lines.values() for _, psnr in points]
    low, high = int(min(values)) - 0.5, int(max(values)) + 1.5
    top_n = max(n for points in lines.values() for n, _ in points)
    image = Image.new("RGB", SIZE, "white")
    draw, font = ImageDraw.Draw(image), ImageFont.load_default()
    left, top, right, bottom = MARGIN
    width, height = SIZE[0] - left - right, SIZE[1] - top - bottom

    def at(n: float, psnr: float) -> tuple[float, float]:
        return left + n / top_n * width, top + (high - psnr) / (high - low) * height

    _axes(draw, font, at, low, high, sorted({n for points in lines.values() for n, _ in points}))
    for index, ((name, kind), points) in enumerate(lines.items()):
        colour = COLOURS[(index // 2) % len(COLOURS)]
        xy = [at(n, psnr) for n, psnr in points]
        legend_y = top + 10 + index * 22
        legend = [(SIZE[0] - right + 15, legend_y + 6), (SIZE[0] - right + 45, legend_y + 6)]
        for line in (xy, legend):
            _line(draw, line, colour, dashed=kind != "model")
        for x, y in xy:
            draw.ellipse((x - 3, y - 3, x + 3, y + 3), fill=colour)
        draw.text((SIZE[0] - right + 52, legend_y), f"{name}: {kind}", fill="black", font=font)
    save_image_whole(image, path)


def _axes(draw, font, at, low: float, high: float, counts: list[int]) -> None:
    x0, y0 = at(0, low)
    x1, y1 = at(counts[-1], high)
    draw.line([(x0, y1), (x0, y0), (x1, y0)], fill="black", width=1)
    for n in counts:
        x, _ = at(n, low)
        draw.line([(x, y0), (x, y0 + 5)], fill="black")
        draw.text((x - 4, y0 + 8), str(n), fill="black", font=font)
    psnr = int(low + 0.5)
    while psnr <= high:
        _, y = at(0, psnr)
        draw.line([(x0 - 5, y), (x1, y)], fill=(225, 225, 225))
        draw.text((x0 - 28, y - 6), str(psnr), fill="black", font=font)
        psnr += 1
    draw.text(((x0 + x1) / 2 - 90, y0 + 26), "colour hints per photo (points)", fill="black", font=font)
    draw.text((8, y1 - 22), "PSNR (dB)", fill="black", font=font)


def _line(draw: ImageDraw.ImageDraw, xy: list[tuple[float, float]], colour, dashed: bool) -> None:
    if not dashed:
        draw.line(xy, fill=colour, width=3)
        return
    for (xa, ya), (xb, yb) in zip(xy, xy[1:], strict=False):
        length = max(1.0, ((xb - xa) ** 2 + (yb - ya) ** 2) ** 0.5)
        for start in range(0, int(length), 2 * DASH):
            end = min(length, start + DASH)
            draw.line(
                [(xa + (xb - xa) * start / length, ya + (yb - ya) * start / length),
                 (xa + (xb - xa) * end / length, ya + (yb - ya) * end / length)],
                fill=colour, width=3,
            )  # fmt: skip


def legend_names(reports: list[dict]) -> list[str]:
    """Each report's name in the legend: its dataset, with its model where two reports share a dataset (then also
    their order, where they share both: each report keeps a line of its own)."""
    datasets = [Path(report["input"]).name.removeprefix("letcolor-") for report in reports]
    names = [
        f"{dataset}, {Path(str(report['model'])).name}" if datasets.count(dataset) > 1 else dataset
        for dataset, report in zip(datasets, reports, strict=True)
    ]
    return [f"{name} ({index})" if names.count(name) > 1 else name for index, name in enumerate(names, 1)]


def read_report(path: Path) -> dict:
    """A report of `evaluate --hints`; ValueError for anything else."""
    try:
        report = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise ValueError(f"{path}: not a readable JSON report ({error})") from None
    if not isinstance(report, dict) or "averages" not in report or "input" not in report:
        raise ValueError(f"{path}: not a report of python -m letcolor evaluate")
    if not any(method.startswith(HINTED) for method in report["averages"]):
        raise ValueError(f"{path}: a report without hinted scores (run evaluate with --hints N ...)")
    return report


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m letcolor.hint_plot", description=__doc__.splitlines()[0])
    parser.add_argument("reports", nargs="+", type=Path, help="JSON reports of evaluate --hints")
    parser.add_argument("-o", "--output", type=Path, required=True, help="the PNG to write")
    args = parser.parse_args(argv)
    if args.output.suffix.lower() != ".png":
        parser.error(f"-o {args.output}: the plot is a PNG (.png)")
    if not args.output.parent.is_dir():
        parser.error(f"-o {args.output}: no folder {args.output.parent}")
    try:
        reports = [read_report(path) for path in args.reports]
    except ValueError as error:
        parser.error(str(error))
    plot(dict(zip(legend_names(reports), reports, strict=True)), args.output)


if __name__ == "__main__":
    main()
