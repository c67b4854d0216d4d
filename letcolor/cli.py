"""The command line: `python -m letcolor colorize | evaluate | bench`.

Exit codes: 0 success; 1 some inputs could not be colorized (each is reported, the others are written);
2 bad usage, including no model to load.
"""

import argparse
import functools
import glob
import os
import shutil
import signal
import struct
import sys
import threading
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

from PIL import ExifTags, Image
from tqdm import tqdm

from letcolor import bench
from letcolor.engines import DEFAULT_ENGINE, ENGINES
from letcolor.hints import Hints
from letcolor.images import (
    EXAMPLES_DIR,
    ImageSource,
    InvalidImageError,
    image_suffixes,
    load_image,
    read_image,
    upright_size,
)
from letcolor.inference import Speedups
from letcolor.metrics import image_tensor, psnr
from letcolor.model import NO_HINTS_MESSAGE
from letcolor.outputs import put_whole, save_image_whole
from letcolor.pipeline import (
    DEFAULT_MAX_SIDE,
    PALETTE_WITH_HINTS,
    Colorizer,
    ModelError,
    Options,
    batches_within,
    load_model,
)
from letcolor.video import VIDEO_SUFFIXES, InvalidVideoError, Mode, colorize_video, is_video_path

COLORIZE_DESCRIPTION = (
    "Colorize image and video files into OUTDIR, under their own names (JPEG, PNG, WebP, TIFF and BMP keep their "
    "format, others become PNG; videos, recognised by their container's extension, become H.264 MP4 with the audio "
    "copied). Exit codes: 0 all written; 1 some inputs could not be colorized (each is reported, the "
    "others are written); 2 bad usage, including no model to load."
)
EXIT_SOME_FAILED = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130  # as a shell reports Ctrl-C
EXIT_TERMINATED = 143  # and SIGTERM
# Output formats kept from the input's extension; anything else is written as PNG.
KEPT_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".tif", ".tiff", ".bmp"}
ALPHA_SUFFIXES = {".png", ".webp", ".tif", ".tiff"}  # of those, the formats that Pillow writes with alpha
DPI_SUFFIXES = {".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp"}  # ... with a resolution
EXIF_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp"}  # ... with EXIF kept apart (a TIFF's tags are its layout too)
EXIF_FORMATS = {"JPEG", "MPO", "PNG", "WEBP"}  # inputs whose EXIF is such a block
SAVE_OPTIONS = {".jpg": {"quality": 95}, ".jpeg": {"quality": 95}, ".webp": {"quality": 95}}
# A TIFF output keeps its input's compression where it holds colour losslessly; a fax or bilevel code becomes LZW,
# JPEG stays JPEG (at SAVE_OPTIONS' quality). Uncompressed, a 600-dpi page came out five times its LZW input's size.
TIFF_LOSSLESS = {"raw", "tiff_lzw", "tiff_adobe_deflate", "tiff_deflate", "packbits", "zstd", "lzma"}
# A batch's photos are held whole at once: four 8000x6000 photos took 2.6 GB in one batch against 1.2 GB one by one,
# and no less time (the network reads them at `max_side`). Batches help small photos only.
BATCH_PIXELS = 16_000_000


def expand_inputs(patterns: list[str]) -> tuple[list[Path], list[str]]:
    """The files to colorize, each once (the first time it is named): files as given, a folder's image and video
    files (by extension, not recursive), glob patterns' matches. And the folders and patterns that give none."""
    files, unmatched, seen = [], [], set()
    for pattern in patterns:
        matches = list(_matches(pattern))
        if not matches:
            unmatched.append(pattern)
        for path in matches:
            if (resolved := path.resolve()) not in seen:
                seen.add(resolved)
                files.append(path)
    return files, unmatched


def folders_with_subfolders(patterns: list[str], output: Path) -> list[tuple[Path, list[str]]]:
    """The folders named among `patterns` that hold subfolders (not hidden, not the `output` folder), with their
    names: a folder's own files are its photos, and the subfolders' were left out without a word."""
    found, output = [], output.resolve()
    for folder in (Path(pattern) for pattern in patterns if Path(pattern).is_dir()):
        subfolders = sorted(
            p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".") and p.resolve() != output
        )
        if subfolders:
            found.append((folder, subfolders))
    return found


def _matches(pattern: str) -> Iterator[Path]:
    suffixes = image_suffixes() | VIDEO_SUFFIXES
    path = Path(pattern)
    if path.is_dir():
        # hidden files left out, as globs leave them (macOS's ._x.jpg beside x.jpg is no photo)
        yield from sorted(
            p for p in path.iterdir() if p.is_file() and p.suffix.lower() in suffixes and not p.name.startswith(".")
        )
    elif path.exists() or not glob.has_magic(pattern):
        yield path  # a missing file is reported when it is read
    else:
        yield from sorted(Path(match) for match in glob.glob(pattern, recursive=True) if Path(match).is_file())


def image_suffix(source: Path, has_alpha: bool) -> str:
    """The input's extension, as it is written, where its format can be kept (and hold the alpha channel: Pillow
    writes a BMP without it), else .png."""
    suffix = source.suffix.lower()
    if suffix not in KEPT_SUFFIXES or (has_alpha and suffix not in ALPHA_SUFFIXES):
        return ".png"
    return source.suffix


class TakenPaths:
    """The paths that no output may take: this run's inputs (their hints, the reference) and outputs. Compared
    without case (a macOS or FAT disk holds IMG.JPG and IMG.jpg as one file) and, where the file exists, as a file
    (a hard link is the same file under another name)."""

    def __init__(self, paths: list[Path]):
        self.names, self.files, self.owners = set(), set(), {}
        for path in paths:
            self.add(path)

    def reserve(self, path: Path, owner: Path) -> None:
        """`path` is `owner`'s own name in the output folder (x.png's out/x.png): no other input takes it first."""
        self.owners.setdefault(self.key(path), owner)

    def taken_for(self, path: Path, source: Path) -> bool:
        return path in self or self.owners.get(self.key(path), source) != source

    def add(self, path: Path) -> None:
        self.names.add(self.key(path))
        if self.exists(path):
            self.files.add(self.identity(path))

    def __contains__(self, path: Path) -> bool:
        return self.key(path) in self.names or (self.exists(path) and self.identity(path) in self.files)

    @staticmethod
    def exists(path: Path) -> bool:
        """False too where the path cannot be looked up: a name too long for the file system (its write fails then,
        for that file alone: it was a traceback that stopped the run)."""
        try:
            return path.exists()
        except OSError:
            return False

    @staticmethod
    def key(path: Path) -> str:
        return str(path.resolve()).casefold()

    @staticmethod
    def identity(path: Path) -> tuple[int, int]:
        status = path.stat()
        return status.st_dev, status.st_ino


def output_path(source: Path, output_dir: Path, suffix: str, taken: TakenPaths) -> Path:
    """OUTDIR/NAME + suffix, else NAME_color, NAME_color-1, ...: never a path in `taken`, so that an output never
    replaces an input (nor another output of the run)."""
    path, number = output_dir / f"{source.stem}{suffix}", 0
    while taken.taken_for(path, source):
        number += 1
        path = output_dir / f"{source.stem}_color{f'-{number - 1}' if number > 1 else ''}{suffix}"
    taken.add(path)
    return path


def max_side_argument(text: str) -> int | None:
    try:
        return None if text == "native" else int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of pixels or 'native', got {text!r}") from None


def add_colorize_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("inputs", nargs="+", metavar="INPUT", help="image or video files, folders or glob patterns")
    parser.add_argument("-o", "--output", required=True, type=Path, metavar="OUTDIR", help="folder for the results")
    add_model_and_colour_arguments(parser)
    parser.add_argument(
        "--hints",
        type=Path,
        metavar="FILE",
        help='colour hints for the one input photo (a model that takes hints): a JSON list of [x, y, "#rrggbb"] '
        "points in the photo's pixels, or an RGBA image of the photo's size whose painted pixels (alpha > 0) are hints",
    )
    parser.add_argument(
        "--batch-size",
        type=int,
        default=4,
        help="images or frames per network batch (default 4; photos of more than 16 MP in all go in smaller ones)",
    )
    parser.add_argument(
        "--video-mode",
        choices=[mode.value for mode in Mode],
        default=Mode.SHOT.value,
        help="videos: one scene vector per shot and colours carried along the motion (shot, default), or each frame "
        "on its own (frame)",
    )


def add_model_and_colour_arguments(parser: argparse.ArgumentParser) -> None:
    """The model, where it runs and the colour options, as colorize and colorize-dataset take them."""
    parser.add_argument("--model", help="model directory or Hugging Face Hub id (default: $LETCOLOR_MODEL, bundled)")
    parser.add_argument("--no-global", action="store_true", help="ignore the global (scene) features")
    parser.add_argument("--strength", type=float, default=1.0, help="global feature strength in [0, 2] (default 1)")
    parser.add_argument("--reference", help="image whose global features (style) are used instead")
    parser.add_argument("--palette", type=float, default=0.0, help="pull colours towards the reference's, in [0, 1]")
    parser.add_argument(
        "--max-side",
        type=max_side_argument,
        default=DEFAULT_MAX_SIDE,
        help=f"long side of the network's input, or 'native' (default {DEFAULT_MAX_SIDE}); the output keeps full size",
    )
    parser.add_argument(
        "--refine",
        action=argparse.BooleanOptionalAction,
        default=Options.refine,
        help="edge-aware colour refinement: colours follow the photo's edges, blotches merge into their regions",
    )
    parser.add_argument("--device", help="cpu or cuda (default: cuda when available)")
    add_engine_argument(parser)


OPTION_FLAGS = {
    "global_strength": "--strength",
    "palette_strength": "--palette",
    "max_side": "--max-side",
    "use_global=False": "--no-global",
}


def colour_options(args: argparse.Namespace, reference: ImageSource | None) -> Options:
    """The pipeline's options; a ValueError names the command line's flags, not the Python API's names."""
    try:
        return Options(not args.no_global, args.strength, reference, args.palette, args.max_side, args.refine)
    except ValueError as error:
        message = str(error).replace("reference image", "--reference").replace(" or None (native size)", " or native")
        for name, flag in OPTION_FLAGS.items():
            message = message.replace(name, flag)
        raise ValueError(message) from error


def add_engine_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--engine",
        choices=ENGINES,
        default=DEFAULT_ENGINE,
        help=f"what runs the network (default {DEFAULT_ENGINE}: the fastest installed for the device; torch-int8: CPU, "
        "calibrated when loaded; onnxruntime: CPU, graphs exported once and cached)",
    )


def run_colorize(args: argparse.Namespace) -> int:
    try:
        options = colour_options(args, args.reference)
        if args.batch_size < 1:
            raise ValueError(f"--batch-size must be >= 1, got {args.batch_size}")
        if args.hints and args.palette > 0:
            raise ValueError(f"--palette with --hints: {PALETTE_WITH_HINTS}")
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_USAGE
    sources, unmatched = expand_inputs(args.inputs)
    for folder, subfolders in folders_with_subfolders(args.inputs, args.output):
        names = ", ".join(subfolders[:3]) + (", ..." if len(subfolders) > 3 else "")
        plural = "s are" if len(subfolders) > 1 else " is"
        example = folder / "**" / "*.jpg"
        print(f'note: {folder}: its subfolder{plural} not read ({names}); a pattern such as "{example}" reads them',
              file=sys.stderr)  # fmt: skip
    if not sources:
        print(f"error: no input images or videos in {' '.join(args.inputs)}", file=sys.stderr)
        return EXIT_SOME_FAILED
    for pattern in unmatched:
        print(f"skipped: {pattern}: no image or video files there", file=sys.stderr)
    try:
        colorizer = Colorizer.from_pretrained(args.model, args.device, engine=args.engine)
        options = replace(options, reference=colorizer.reference(options.reference))  # read once for every file
        for warning in options.reference.warnings if options.reference else ():
            print(f"warning: {warning}", file=sys.stderr)
        hints = photo_hints(args.hints, sources, colorizer) if args.hints else None
        make_output_folder(args.output)
    except ValueError as error:  # InvalidModelError, InvalidHintsError, InvalidImageError (the reference)
        print(f"error: {error}", file=sys.stderr)
        return EXIT_USAGE
    read = [*sources, *(Path(path) for path in (args.hints, args.reference) if path)]
    taken = TakenPaths(read)  # no output may land on an input, its hints or its reference
    for source in sources:  # x.png's result is out/x.png even where x.gif's, which would be too, comes first
        taken.reserve(args.output / source.name, source)
    videos = [source for source in sources if is_video_path(source)]
    images = [source for source in sources if not is_video_path(source)]
    failed = colorize_files(colorizer, images, args.output, options, args.batch_size, taken, hints) if images else 0
    if videos:
        failed += colorize_videos(colorizer, videos, args.output, options, args.video_mode, args.batch_size, taken)
    kind = "images" if not videos else "videos" if not images else "files"
    print(f"colorized {len(sources) - failed} of {len(sources)} {kind} into {args.output}", file=sys.stderr)
    return EXIT_SOME_FAILED if failed or unmatched else 0


def photo_hints(path: Path, sources: list[Path], colorizer: Colorizer) -> Hints | None:
    """The hints file read for the one input photo (None where the photo cannot be read: it fails as it would
    without hints); ValueError where the hints cannot be used."""
    if len(sources) != 1:
        raise ValueError(f"--hints: give exactly one input photo ({len(sources)} inputs given)")
    if is_video_path(sources[0]):
        raise ValueError(f"--hints: hints are for photos, and {sources[0]} is a video")
    if not colorizer.takes_hints:
        raise ValueError(f"--hints: {NO_HINTS_MESSAGE}")
    try:
        size = upright_size(sources[0])  # from the header, after the photo's EXIF orientation
    except InvalidImageError:
        return None
    return Hints.parse(path, size)


def check_output_folder(folder: Path) -> None:
    """ValueError where OUTDIR could not be made or written, without making it."""
    if folder.exists() and not folder.is_dir():
        raise ValueError(f"-o {folder}: is a file, not a folder")
    existing = next(parent for parent in (folder, *folder.absolute().parents) if parent.exists())
    if not existing.is_dir():
        raise ValueError(f"-o {folder}: cannot create the folder ({existing} is a file)")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ValueError(f"-o {folder}: not writable")


def make_output_folder(folder: Path) -> None:
    """Creates OUTDIR (and its parents); ValueError, with the reason, where that cannot be done."""
    check_output_folder(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise ValueError(f"-o {folder}: cannot create the folder ({error.strerror or error})") from error


def colorize_files(
    colorizer: Colorizer,
    sources: list[Path],
    output_dir: Path,
    options: Options,
    batch_size: int,
    taken: TakenPaths,
    hints: Hints | None = None,
) -> int:
    """Colorizes and writes the files batch by batch, never onto a path in `taken`; reports each one that fails;
    returns how many failed. `hints` are every photo's (the CLI gives them with one photo only)."""
    written = 0
    with tqdm(total=len(sources), unit="image", desc="colorizing", disable=None) as progress:
        for loaded in photo_batches(sources, batch_size, progress):
            each_hints = [hints] * len(loaded) if hints else None
            results = colorizer.batch(list(loaded.values()), hints=each_hints, **vars(options))
            for source, result in zip(loaded, results, strict=True):
                path = output_path(source, output_dir, image_suffix(source, result.image.mode == "RGBA"), taken)
                try:
                    save_with_metadata(result.image, path, loaded[source])
                    written += 1
                except OSError as error:
                    progress.write(f"could not write {path}: {error.strerror or error}", file=sys.stderr)
                progress.update()
    return len(sources) - written


def photo_batches(sources: list[Path], batch_size: int, progress: tqdm) -> Iterator[dict[Path, Image.Image]]:
    """The photos that can be read, in batches of at most `batch_size` photos and BATCH_PIXELS pixels (or one
    photo). The photo after a batch under those limits is read before the batch is handed out (its size decides)."""
    for batch in batches_within(readable_photos(sources, progress), batch_size, BATCH_PIXELS, photo_pixels):
        yield dict(batch)


def readable_photos(sources: list[Path], progress: tqdm) -> Iterator[tuple[Path, Image.Image]]:
    """Each photo that can be read; each that cannot is reported and counted done on `progress`, with each one's
    warnings."""
    for source in sources:
        try:
            read = read_image(source)
        except InvalidImageError as error:
            progress.write(f"skipped: {error}", file=sys.stderr)
            progress.update()
            continue
        for warning in read.warnings:
            progress.write(f"warning: {warning}", file=sys.stderr)
        yield source, read.image


def photo_pixels(photo: tuple[Path, Image.Image]) -> int:
    return photo[1].width * photo[1].height


def save_with_metadata(image: Image.Image, path: Path, original: Image.Image) -> None:
    """`image` saved to `path` with the `original` photo's resolution and EXIF (dates, captions; its orientation,
    applied already, is gone) where the format holds them; without them where Pillow cannot write them."""
    suffix = path.suffix.lower()
    options = SAVE_OPTIONS.get(suffix, {})
    metadata = {"dpi": original.info.get("dpi") if suffix in DPI_SUFFIXES else None}
    exif_kept = suffix in EXIF_SUFFIXES and original.format in EXIF_FORMATS  # a TIFF's "EXIF" is its own layout
    metadata["exif"] = srgb_exif(original.getexif()) if exif_kept else None
    if suffix in (".tif", ".tiff") and original.format == "TIFF":
        metadata["compression"] = tiff_compression(original.info.get("compression", "raw"))
        metadata["quality"] = 95 if metadata["compression"] == "jpeg" else None
    metadata = {key: value for key, value in metadata.items() if value}
    try:
        save_image_whole(image, path, **options, **metadata)
    except (ValueError, TypeError, AttributeError, struct.error):  # an odd tag or resolution of the original
        save_image_whole(image, path, **options)


def srgb_exif(exif: Image.Exif) -> Image.Exif:
    """The EXIF of an output, which is sRGB (its input's profile applied): a colour space said "uncalibrated" (an
    Adobe RGB camera's) is sRGB now."""
    details = exif.get_ifd(ExifTags.IFD.Exif)
    if ExifTags.Base.ColorSpace in details:
        details[ExifTags.Base.ColorSpace] = 1  # sRGB
    return exif


def tiff_compression(compression: str) -> str:
    """The compression of a colour TIFF written from one of `compression` (`TIFF_LOSSLESS`)."""
    return compression if compression in TIFF_LOSSLESS | {"jpeg"} else "tiff_lzw"


class FrameProgress:
    """A tqdm bar in frames, fed by colorize_video's progress callback."""

    def __init__(self, bar: tqdm):
        self.bar = bar

    def __call__(self, done: int, total: int) -> None:
        self.bar.total = total or None
        self.bar.update(done - self.bar.n)


def colorize_videos(colorizer: Colorizer, sources: list[Path], output_dir: Path, options: Options, mode: str,
                    batch_size: int, taken: TakenPaths) -> int:  # fmt: skip
    """Colorizes video files into H.264 MP4s, never onto a path in `taken`, a progress bar in frames each;
    returns how many failed."""
    failed = 0
    for source in sources:
        path = output_path(source, output_dir, ".mp4", taken)
        passes = "" if mode == Mode.FRAME else " (2 passes)"  # the shot mode reads the video twice
        with tqdm(unit="frame", desc=f"{source.name}{passes}", disable=None) as bar:
            try:
                colorize_video(colorizer, source, path, mode=mode, batch_size=batch_size, progress=FrameProgress(bar),
                               **vars(options))  # fmt: skip
            except (InvalidVideoError, OSError) as error:
                failed += 1
                bar.write(f"skipped: {error}", file=sys.stderr)
    return failed


def add_evaluate_command(commands) -> None:
    """The evaluate command lives in letcolor.evaluate; the rest of the CLI works without it."""
    try:
        from letcolor import evaluate
    except ModuleNotFoundError as error:
        if error.name != "letcolor.evaluate":
            raise
        return
    parser = commands.add_parser(
        "evaluate", help="measure colorization quality on a dataset", description=evaluate.__doc__.split("\n\n")[0]
    )
    evaluate.add_arguments(parser)
    parser.set_defaults(run=evaluate.run)


ARCHIVE_HELP = (
    "Colorizes every photo of SRC (a folder of images, searched recursively, or a Hub-layout parquet dataset with an "
    "image column; local or an fsspec URL) into DST (a Hub-layout parquet dataset: id, image, classes, error; or, "
    "with --images, a folder tree mirroring SRC's) on Ray Data. Results are committed in shards; the same command "
    "run again skips what DST holds, so after a crash it finishes the work with each photo once. Needs Ray Data: "
    "pip install '.[cluster]' in letcolor's checkout, or 'ray[data]'."
)


def add_archive_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("source", metavar="SRC", help="folder of images or parquet dataset (path or fsspec URL)")
    parser.add_argument("-o", "--output", required=True, metavar="DST", help="local folder for the results")
    parser.add_argument("--images", action="store_true", help="write image files mirroring SRC's tree")
    parser.add_argument("--id-column", default="id", help="the parquet dataset's id column (default: id)")
    parser.add_argument(
        "--hints", metavar="DIR", help="colour hints per photo (a model that takes hints): DIR/<id>.json or <id>.png"
    )
    add_model_and_colour_arguments(parser)
    parser.add_argument("--address", help="a Ray cluster's address (default: start Ray on this machine)")
    parser.add_argument("--num-cpus", type=int, help="CPUs for Ray on this machine (default: all)")
    parser.add_argument("--num-gpus-per-worker", type=float, default=0.0, help="GPUs for each model actor")
    parser.add_argument(
        "--batch-size",
        type=int,
        default=8,
        help="photos per network batch (default 8; an actor call takes about 32 rows)",
    )
    parser.add_argument("--concurrency", type=int, default=1, help="model actors (default 1)")
    parser.add_argument("--shard-rows", type=int, default=512, help="rows per committed shard (default 512)")
    parser.add_argument("--retry-errors", action="store_true", help="colorize again the photos recorded as errors")
    parser.add_argument("--dry-run", action="store_true", help="count the work and stop")


def run_archive(args: argparse.Namespace) -> int:
    try:
        from letcolor.archive import Job, colorize_dataset

        options = colour_options(args, args.reference)
        if args.reference:
            load_image(args.reference)  # a bad reference: refused before Ray starts
        if min(args.batch_size, args.concurrency, args.shard_rows) < 1:
            raise ValueError("--batch-size, --concurrency and --shard-rows must be at least 1")
        job = Job(
            args.source, args.output, images=args.images, model=args.model, engine=args.engine, device=args.device,
            options=vars(options), hints=args.hints, id_column=args.id_column, address=args.address,
            num_cpus=args.num_cpus, num_gpus_per_worker=args.num_gpus_per_worker, batch_size=args.batch_size,
            shard_rows=args.shard_rows, concurrency=args.concurrency, retry_errors=args.retry_errors,
            dry_run=args.dry_run,
        )  # fmt: skip
        summary = colorize_dataset(job)
    except (ValueError, ImportError) as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_USAGE
    except OSError as error:  # writing DST (a full disk): the shards committed are kept, and a rerun goes on
        print(f"error: cannot write {error.filename or args.output}: {error.strerror or error}", file=sys.stderr)
        return EXIT_SOME_FAILED
    print(f"{summary.todo} photos to colorize, {summary.before}" if args.dry_run else summary.line())
    return EXIT_SOME_FAILED if summary.errors else 0


AGREEMENT_PHOTOS = [EXAMPLES_DIR / name for name in ("china.jpg", "chelsea_gray.png")]
EXPORT_HELP = (
    "Writes the model's network as two ONNX graphs with dynamic batch, height and width: global.onnx (L at 224x224 "
    "-> scene vectors and class logits) and colorize.onnx (L, scene vectors and, for a model with hints, the hint "
    "channels -> sigmoid a,b at half size); for a model with hints also colorize_automatic.onnx (colorize.onnx "
    "without the hint inputs, for photos without hints). Each is checked with onnx.checker, and ONNX Runtime's "
    "colours are compared with torch's on the example photos."
)


def check_no_folder_named_as_a_graph(folder: Path, names: tuple[str, ...]) -> None:
    """ValueError where a folder in OUTDIR has a graph's name (a traceback after the first graph was written)."""
    taken = [name for name in names if (folder / name).is_dir() and not (folder / name).is_symlink()]
    if taken:
        raise ValueError(f"-o {folder}: {', '.join(taken)} is a folder there, where a graph would be written")


def run_export(args: argparse.Namespace) -> int:
    try:
        from letcolor import onnx_engine
    except ImportError as error:
        print(f"error: export-onnx needs {error.name}: pip install onnx onnxruntime", file=sys.stderr)
        return EXIT_USAGE
    try:
        check_output_folder(args.output)  # before the export's work, and a bad model before the folder is made
        check_no_folder_named_as_a_graph(args.output, onnx_engine.GRAPH_NAMES)
        model = load_model(args.model)
        make_output_folder(args.output)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_USAGE
    graphs = onnx_engine.cached_export(model)  # the very graphs that the onnxruntime engine runs
    onnx_engine.check(graphs)
    names = onnx_engine.graph_names(graphs)
    for name in onnx_engine.GRAPH_NAMES:  # each put in place whole; a link of its name is replaced, not followed
        try:
            if name in names:
                put_whole(args.output / name, functools.partial(shutil.copyfile, graphs / name))
            else:  # another model's, exported there before: it would be run with this model's graphs
                (args.output / name).unlink(missing_ok=True)
        except OSError as error:
            print(f"error: cannot write {args.output / name}: {error.strerror or error}", file=sys.stderr)
            return 1
    exact = Colorizer(model, "cpu", Speedups(fold_batchnorm=True), engine="torch")
    runtime = Colorizer(model, "cpu", engine="onnxruntime")
    for photo in AGREEMENT_PHOTOS:
        pixels = [image_tensor(colorizer(photo).image) for colorizer in (exact, runtime)]
        print(f"{photo.name}: onnxruntime against torch float32, PSNR {psnr(*pixels).item():.1f} dB")
    print(f"wrote {', '.join(str(args.output / name) for name in names)}")
    return 0


def program_name() -> str:
    """`letcolor` when run as the installed console command, else `python -m letcolor`."""
    return "letcolor" if Path(sys.argv[0]).name == "letcolor" else "python -m letcolor"


def build_parser() -> argparse.ArgumentParser:
    # No abbreviated options: `--mode frame` was taken for `--model frame` (then 40 s of Hub retries for "frame")
    parser = argparse.ArgumentParser(
        prog=program_name(), description="Colorize black-and-white photos and videos.", allow_abbrev=False
    )
    without_abbreviations = functools.partial(argparse.ArgumentParser, allow_abbrev=False)
    commands = parser.add_subparsers(dest="command", required=True, parser_class=without_abbreviations)
    colorize = commands.add_parser("colorize", help="colorize photos and videos", description=COLORIZE_DESCRIPTION)
    add_colorize_arguments(colorize)
    colorize.set_defaults(run=run_colorize)
    add_evaluate_command(commands)
    archive = commands.add_parser(
        "colorize-dataset", help="colorize an archive on Ray Data (resumable)", description=ARCHIVE_HELP
    )
    add_archive_arguments(archive)
    archive.set_defaults(run=run_archive)
    export = commands.add_parser("export-onnx", help="export the network as ONNX graphs", description=EXPORT_HELP)
    export.add_argument("--model", help="model directory or Hugging Face Hub id (default: $LETCOLOR_MODEL, bundled)")
    export.add_argument("-o", "--output", required=True, type=Path, metavar="DIR", help="folder for the graphs")
    export.set_defaults(run=run_export)
    bench_parser = commands.add_parser("bench", help="time the pipeline", description=bench.__doc__)
    bench.add_arguments(bench_parser)
    bench_parser.set_defaults(run=bench.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    with messages_that_never_fail(), one_line_warnings():
        try:
            with stopped_cleanly_by_sigterm():
                return args.run(args)
        except ModelError as error:
            print(f"error: {' '.join(str(error).split())}", file=sys.stderr)  # one line
            return EXIT_USAGE
        except KeyboardInterrupt:
            print("interrupted", file=sys.stderr)
            return EXIT_INTERRUPTED
        except Terminated:
            print("terminated", file=sys.stderr)
            return EXIT_TERMINATED


@contextmanager
def one_line_warnings() -> Iterator[None]:
    """Warnings shown as the command's own messages, one line each and each once (Python's named a line of letcolor's
    code and showed it; a cache that could not be written was told of twice)."""
    shown = set()

    def show(message, *_):
        if str(message) not in shown:
            shown.add(str(message))
            print(f"warning: {message}", file=sys.stderr)

    with warnings.catch_warnings():
        warnings.showwarning = show
        yield


class Messages:
    """A text stream whose writes never stop a run: dropped from the time the pipe it feeds has no reader (`2>&1 |
    head`: a run stopped at its next message with BrokenPipeError, its other photos not colorized), and written with
    the characters its encoding lacks replaced (evaluate's table arrows to a file on Windows, or under
    PYTHONIOENCODING=ascii, lost the report after the whole run)."""

    def __init__(self, stream):
        self.stream = stream

    def write(self, text: str) -> int:
        try:
            return self._encodable_write(text)
        except BrokenPipeError:
            self._unread()
            return len(text)

    def writelines(self, lines) -> None:
        for line in lines:
            self.write(line)

    def _encodable_write(self, text: str) -> int:
        try:
            return self.stream.write(text)
        except UnicodeEncodeError:
            encoding = getattr(self.stream, "encoding", None) or "ascii"
            return self.stream.write(text.encode(encoding, "replace").decode(encoding))

    def flush(self) -> None:
        try:
            self.stream.flush()
        except BrokenPipeError:
            self._unread()

    def _unread(self) -> None:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, self.stream.fileno())  # (what it still buffers goes nowhere)
        os.close(devnull)

    def __getattr__(self, name: str):
        return getattr(self.stream, name)


@contextmanager
def messages_that_never_fail() -> Iterator[None]:
    """stdout and stderr as `Messages` streams for the time of a command."""
    streams = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = Messages(sys.stdout), Messages(sys.stderr)
    try:
        yield
    finally:
        sys.stdout, sys.stderr = streams


class Terminated(BaseException):
    """SIGTERM, raised where the program is, as KeyboardInterrupt is for Ctrl-C (neither is an Exception: no handler
    of a photo's errors takes it for one)."""


@contextmanager
def stopped_cleanly_by_sigterm() -> Iterator[None]:
    """SIGTERM (`timeout`, `kill`, a service manager) stops as Ctrl-C does, through the same clean-up: it left a
    video's partial output behind. Only where signals can be set (the main thread)."""

    def exit_now(signal_number: int, frame) -> None:
        raise Terminated

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, exit_now)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
