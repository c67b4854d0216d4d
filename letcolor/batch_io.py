"""The web app's result files: each named after the user's photo, in a folder of their own that nothing half-made
outlives; a batch's results as one zip plus a small preview of each."""

import io
import re
import shutil
import tempfile
import time
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from PIL import Image

FOLDER_PREFIX = "letcolor-"
ZIP_NAME = "letcolor-results.zip"
PREVIEW_SIDE = 512
MAX_STEM_BYTES = 100  # file names stay far below the file system's 255 bytes (in UTF-8: a CJK character takes 3)


def result_name(photo_name: str, suffix: str = ".png") -> str:
    """`photo.jpg` -> `photo_color.png`: the stem of a file name or path, without control characters, shortened to
    whole characters within MAX_STEM_BYTES."""
    stem = re.sub(r"[\x00-\x1f\x7f]", "", Path(photo_name).stem)
    stem = stem.encode("utf-8", "ignore")[:MAX_STEM_BYTES].decode("utf-8", "ignore") or "photo"
    return f"{stem}_color{suffix}"


def new_result_folder(parent: str | Path, kind: str) -> Path:
    return Path(tempfile.mkdtemp(prefix=f"{FOLDER_PREFIX}{kind}-", dir=parent))


@contextmanager
def result_folder(parent: str | Path, kind: str) -> Iterator[Path]:
    """A new result folder under `parent`, removed whole if the block does not complete."""
    folder = new_result_folder(parent, kind)
    try:
        yield folder
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise


def save_result(image: Image.Image, photo_name: str, parent: str | Path) -> Path:
    """`image` as `<photo name>_color.png` in a new folder under `parent`; nothing is left there if writing fails."""
    with result_folder(parent, "photo") as folder:
        path = folder / result_name(photo_name)
        image.save(path, format="PNG")
    return path


def remove_stale_folders(parent: str | Path, max_age_seconds: float) -> None:
    """Removes result folders older than `max_age_seconds`: what a crash or an abandoned request left behind."""
    oldest = time.time() - max_age_seconds
    for folder in Path(parent).glob(f"{FOLDER_PREFIX}*"):
        try:
            if folder.is_dir() and folder.stat().st_mtime < oldest:
                shutil.rmtree(folder, ignore_errors=True)
        except FileNotFoundError:  # removed meanwhile by another request or process
            continue


class ResultsZip:
    """Writes colorized photos into a zip one at a time, so a batch never holds all its results in memory.

    Use as a context manager; `add` names each entry `<photo name>_color.png`, numbered when two photos share a name.
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._zip = zipfile.ZipFile(self.path, "w", compression=zipfile.ZIP_STORED)  # PNG data is already compressed
        self._names: set[str] = set()

    def add(self, photo_name: str, image: Image.Image) -> str:
        """Add `image` as a PNG named after `photo_name` (a file name or path); returns the entry's name."""
        name = self._unique_name(photo_name)
        png = io.BytesIO()
        image.save(png, format="PNG")
        self._zip.writestr(name, png.getvalue())
        return name

    def _unique_name(self, photo_name: str) -> str:
        """Unique ignoring case: unzipped on Windows or macOS, Photo_color.png replaced photo_color.png."""
        name, number = result_name(photo_name), 2
        while name.casefold() in self._names:
            name, number = result_name(photo_name, f"_{number}.png"), number + 1
        self._names.add(name.casefold())
        return name

    def close(self) -> None:
        self._zip.close()

    def __enter__(self) -> "ResultsZip":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


class BatchFolder:
    """One batch's results in a new folder under `parent`: the zip of full-resolution PNGs and a WebP preview of
    each (for a gallery). Use as a context manager: if the batch does not complete, the folder is removed whole, so
    no partial zip is left behind."""

    def __init__(self, parent: str | Path):
        self.path = new_result_folder(parent, "batch")
        self.zip = ResultsZip(self.path / ZIP_NAME)
        self.previews: list[tuple[Path, str]] = []  # (preview file, the zip entry's name)

    def add(self, photo_name: str, image: Image.Image) -> None:
        name = self.zip.add(photo_name, image)
        preview = image.copy()
        preview.thumbnail((PREVIEW_SIDE, PREVIEW_SIDE))
        path = self.path / f"{Path(name).stem}.webp"
        preview.save(path, format="WEBP", quality=85)
        self.previews.append((path, name))

    def __enter__(self) -> "BatchFolder":
        return self

    def __exit__(self, exc_type, *_) -> None:
        try:
            self.zip.close()
        finally:
            if exc_type is not None:
                shutil.rmtree(self.path, ignore_errors=True)
