"""Output files put in place whole: written beside their name under a new hidden one, then renamed to it. An
interruption or a full disk leaves no cut-short file under the output's name, and a link of that name (symbolic or
hard) is replaced, not written through to the file it points at."""

import io
import os
import secrets
import shutil
from collections.abc import Callable
from pathlib import Path

from PIL import Image


def new_partial_file(destination: Path) -> Path:
    """A new empty file beside `destination` to write into, under a short name that no file had: never an input,
    never another run's."""
    while True:
        partial = destination.with_name(f".letcolor-{secrets.token_hex(6)}{destination.suffix}")
        try:
            os.close(os.open(partial, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666))
            return partial
        except FileExistsError:
            continue


def write_whole(path: Path, data: bytes) -> None:
    """`data` as the file `path`, put in place whole (`put_whole`). A full disk is raised as the write or the close
    meets it: an image encoder writing to the file itself let a short write pass."""
    put_whole(path, lambda partial: partial.write_bytes(data))


def put_whole(path: Path, write: Callable[[Path], object]) -> None:
    """`write(partial)` writes a new file beside `path`, which is then renamed to it, with the permissions of the
    file it replaces: readers find the whole file or the last one. OSError where it cannot be, naming `path`."""
    partial = None
    try:
        partial = new_partial_file(path)
        write(partial)
        if path.is_file() and not path.is_symlink():  # (a private output stays private)
            shutil.copymode(path, partial)
        os.replace(partial, path)
    except OSError as error:  # named after the output, not the hidden file
        raise OSError(error.errno, error.strerror, str(path)) from error
    finally:
        if partial is not None:
            partial.unlink(missing_ok=True)


def save_image_whole(image: Image.Image, path: Path, **options) -> None:
    """`image.save(path, **options)`, encoded in memory, then put in place whole (`write_whole`)."""
    encoded = io.BytesIO()
    image.save(encoded, format=Image.registered_extensions()[path.suffix.lower()], **options)
    write_whole(path, encoded.getvalue())
