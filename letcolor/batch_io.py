"""A batch's results as one zip: a PNG per input photo, named after the photo."""

import io
import zipfile
from pathlib import Path

from PIL import Image


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
        name = self._unique_name(Path(photo_name).stem or "photo")
        png = io.BytesIO()
        image.save(png, format="PNG")
        self._zip.writestr(name, png.getvalue())
        return name

    def _unique_name(self, stem: str) -> str:
        name, number = f"{stem}_color.png", 2
        while name in self._names:
            name, number = f"{stem}_color_{number}.png", number + 1
        self._names.add(name)
        return name

    def __enter__(self) -> "ResultsZip":
        return self

    def __exit__(self, *exc_info) -> None:
        self._zip.close()
