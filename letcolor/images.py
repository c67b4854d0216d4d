"""Reading input images: decoding, validation, EXIF orientation, and splitting off the alpha channel."""

import contextlib
import functools
import io
import re
import struct
import threading
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from PIL import ExifTags, Image, ImageCms, ImageOps, TiffImagePlugin, UnidentifiedImageError

# Larger images are refused from their header, before decoding (decompression bombs). PIL's own limit
# (Image.MAX_IMAGE_PIXELS) is global state that applications may change, so this module checks its own.
MAX_IMAGE_PIXELS = 100_000_000
A_VIDEO = "a video, not a photo: colorize it as a video (letcolor.video.colorize_video, or the app's Video tab)"
# Where video containers say what they are: MP4, MOV and 3GP boxes, Matroska and WebM, AVI, FLV, ASF, MPEG-PS
VIDEO_SIGNATURES = (
    *((4, box) for box in (b"ftyp", b"moov", b"mdat", b"wide", b"free")), (0, b"\x1a\x45\xdf\xa3"), (8, b"AVI "),
    (0, b"FLV"), (0, b"\x30\x26\xb2\x75"), (0, b"\x00\x00\x01\xba"),
)  # fmt: skip
PHOTO_BRANDS = {b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"mif1", b"msf1", b"avif", b"avis"}
NOT_AN_IMAGE = "not a readable image (not a format letcolor reads, or corrupt; icons (ICO, ICNS) and EPS are not read)"
EXAMPLES_DIR = Path(__file__).resolve().parent / "examples"  # the example photos that ship with letcolor

ImageSource = str | Path | Image.Image | np.ndarray

# Modes converted by PIL to one the pipeline reads directly.
_CONVERSIONS = {"1": "L", "La": "LA", "PA": "RGBA", "RGBa": "RGBA", "RGBX": "RGB", "CMYK": "RGB", "YCbCr": "RGB"}
_GRAY_WHITE_LEVELS = {"L": 255, "I;16": 65535, "I;16L": 65535, "I;16B": 65535, "I;16N": 65535, "I": 65535, "F": 1}
FLOAT_PIXEL_SLACK = 0.01
SUPPORTED_MODES = sorted({*_CONVERSIONS, *_GRAY_WHITE_LEVELS, "LA", "RGB", "RGBA", "P"})
_SRGB = ImageCms.createProfile("sRGB")
_COLOUR_GRID = [(r, g, b) for r in range(0, 256, 51) for g in range(0, 256, 51) for b in range(0, 256, 51)]
_CALLERS_IMAGES = threading.Lock()  # see `reading_callers_image`
TIFF_NEW_SUBFILE_TYPE, TIFF_SUB_IFDS = 254, 330  # tags: what an image is (bit 0: reduced resolution), sub-images
_PROFILE_KINDS = {"L": "GRAY", "I;16": "GRAY", "I;16L": "GRAY", "I;16B": "GRAY", "RGB": "RGB"}


def _s15_fixed16(*values: float) -> bytes:
    return b"".join(struct.pack(">i", round(value * 65536)) for value in values)


def _icc_text(text: str) -> bytes:
    encoded = text.encode("utf-16-be")
    return b"mluc" + bytes(4) + struct.pack(">II", 1, 12) + b"enUS" + struct.pack(">II", len(encoded), 28) + encoded


def _srgb_gray_profile() -> ImageCms.ImageCmsProfile:
    """A gray ICC profile (v4) whose levels follow the sRGB curve: what gray levels are taken as, and where a gray
    scan's own profile takes them (Pillow makes no gray profile, and an RGB output would round 16-bit levels to 8)."""
    d50 = _s15_fixed16(0.9642, 1.0, 0.8249)
    srgb_curve = (
        b"para" + bytes(4) + struct.pack(">HH", 3, 0) + _s15_fixed16(2.4, 1 / 1.055, 0.055 / 1.055, 1 / 12.92, 0.04045)
    )
    tags = [(b"desc", _icc_text("sRGB gray")), (b"cprt", _icc_text("No copyright")),
            (b"wtpt", b"XYZ " + bytes(4) + d50), (b"kTRC", srgb_curve)]  # fmt: skip
    start, table, data = 132 + 12 * len(tags), b"", b""
    for signature, body in tags:
        table += signature + struct.pack(">II", start + len(data), len(body))
        data += body + bytes(-len(body) % 4)
    header = struct.pack(">I", start + len(data)) + b"lcms" + struct.pack(">I", 0x04300000) + b"mntrGRAYXYZ "
    header += bytes(12) + b"acsp" + bytes(28) + d50 + bytes(48)
    return ImageCms.ImageCmsProfile(io.BytesIO(header + struct.pack(">I", len(tags)) + table + data))


_SRGB_GRAY = _srgb_gray_profile()


# Not read. Icons: Pillow decodes their images while opening them (to learn their sizes), before any size can be
# checked, so a small ICO holding a 13000x13000 PNG took 650 MB. EPS: Pillow runs Ghostscript on it, a PostScript
# program from whoever sent the file.
NOT_READ = ("ICO", "ICNS", "EPS")
MAX_TILE_PIXELS = 1024 * 1024  # a TIFF's tiles may be larger than the image, up to this (256 or 512 a side is usual)
# What Pillow raises for a damaged file besides OSError: a truncated TIFF or PPM "buffer is not large enough"
# (ValueError), a QOI IndexError, a bad header's SyntaxError or struct.error.
DECODING_ERRORS = (OSError, SyntaxError, ValueError, IndexError, EOFError, struct.error)
# What Pillow raises for a damaged EXIF block (a PNG's getexif decodes the image: its OSError is the image's), or
# writing one back: a tag of another type than its own (a RATIONAL caption: "'IFDRational' object has no attribute")
EXIF_ERRORS = (SyntaxError, ValueError, IndexError, EOFError, struct.error, TypeError, AttributeError)


@functools.cache
def read_formats() -> tuple[str, ...]:
    """The image formats read: those Pillow opens, but icons and EPS (`NOT_READ`)."""
    Image.init()
    return tuple(form for form in Image.OPEN if form not in NOT_READ)


@functools.cache
def image_suffixes() -> frozenset[str]:
    """The file extensions (lower case, with the dot) of the image formats read (`read_formats`): how the CLI,
    evaluation and archive runs tell an image file in a folder (PDF and Palm, which Pillow only writes, are not)."""
    return frozenset(suffix for suffix, form in Image.registered_extensions().items() if form in read_formats())


class InvalidImageError(ValueError):
    """The input cannot be colorized: not an image, truncated, empty, too large, or of an unsupported mode or type."""


class LoadedImage(NamedTuple):
    image: Image.Image  # decoded, validated, upright
    warnings: tuple[str, ...]  # what the caller should know, e.g. that only the first frame of an animation is used


class Pixels(NamedTuple):
    values: torch.Tensor  # (C, H, W), C = 1 (gray) or 3 (sRGB), in the image's own integer or float type
    white_level: float  # the value of white in `values`
    alpha: Image.Image | None  # mode "L", kept as it is for the output


def load_image(source: ImageSource) -> Image.Image:
    """A path, PIL image or numpy array as a decoded, validated, upright (EXIF-transposed) PIL image.

    Arrays: HxW, HxWx1, HxWx3 or HxWx4 of uint8, uint16 (gray kept as 16-bit; colour reduced to 8-bit) or float in
    [0, 1]. Raises InvalidImageError for anything that cannot be colorized."""
    return read_image(source).image


def read_image(source: ImageSource, role: str = "input") -> LoadedImage:
    """`load_image`'s image and its warnings: an animated or multi-page file gives its first frame and says so.
    `role` names a caller's image or array in messages: "input" (it is colorized) or "reference" (it is used)."""
    used = "colorized" if role == "input" else "used"
    if isinstance(source, str | Path):
        with _opened(Path(source), str(source)) as image:
            return _decoded(image, str(source), used=used)
    if isinstance(source, Image.Image):
        with reading_callers_image():
            return _decoded(_decodable(source), f"the {role} image", owned=False, used=used)
    if isinstance(source, np.ndarray):
        return _decoded(_image_from_array(source), f"the {role} array", used=used)
    raise InvalidImageError(f"expected a path, PIL image or numpy array, got {type(source).__name__}")


@contextlib.contextmanager
def reading_callers_image() -> Iterator[None]:
    """Held while a caller's image is read: one image, perhaps not loaded yet, may be passed by several threads at
    once, and Pillow's lazy loading (and seeking frames) is not thread-safe."""
    with _CALLERS_IMAGES:
        yield


def _decodable(image: Image.Image) -> Image.Image:
    """A caller's image; or, where Pillow's own decoder would read it wrong (an uncompressed TIFF turned a quarter by
    its orientation, not loaded yet: `_libtiff_for_every_tiff`), its page opened again from its file with libtiff."""
    tiles = getattr(image, "tile", None)
    if image.format != "TIFF" or not tiles or tiles[0].codec_name != "raw" or getattr(image, "fp", None) is None:
        return image
    if not _reported_upright(image):
        return image
    image.fp.seek(0)
    with _libtiff_for_every_tiff():
        reopened = Image.open(image.fp, formats=["TIFF"])
    reopened.seek(image.tell())
    return reopened


def open_header(path: str | Path) -> Image.Image:
    """The image file opened lazily (its header read, nothing decoded); InvalidImageError where it is not an image
    letcolor reads, or declares more pixels than Pillow opens."""
    return _opened(Path(path), str(path))


def read_image_bytes(data: bytes, name: str) -> tuple[LoadedImage, str | None]:
    """`read_image` for an encoded image held in memory (`name` names it in errors), and its format ("PNG", ...)."""
    with _opened(io.BytesIO(data), name) as image:
        return _decoded(image, name), image.format


def check_image_file(path: str | Path, max_pixels: int = MAX_IMAGE_PIXELS) -> None:
    """Refuses a file that is not an image or declares more than `max_pixels` pixels (InvalidImageError), from its
    header alone: nothing is decoded."""
    with _opened(Path(path), str(path), max_pixels) as image:
        check_header(image, str(path), max_pixels)


def upright_size(path: str | Path, max_pixels: int = MAX_IMAGE_PIXELS) -> tuple[int, int]:
    """The image file's (width, height) after its EXIF orientation, from its header (InvalidImageError as in
    `check_image_file`)."""
    with _opened(Path(path), str(path), max_pixels) as image:
        check_header(image, str(path), max_pixels)
        turned = (_orientation(image) or 1) in (5, 6, 7, 8)  # a quarter turn
        return image.size[::-1] if turned and not _reported_upright(image) else image.size


def exif_orientation(path: str | Path) -> int:
    """The image file's EXIF orientation (1: as stored, also where its EXIF data is damaged), from its header."""
    with _opened(Path(path), str(path)) as image:
        return _orientation(image) or 1


def upright(image: Image.Image) -> Image.Image:
    """A copy of the image turned upright by its EXIF orientation, as stored where its EXIF data is damaged (as
    letcolor reads photos, less the warning)."""
    return image.copy() if _orientation(image) is None else ImageOps.exif_transpose(image)


def _orientation(image: Image.Image) -> int | None:
    """The opened image's EXIF orientation (1: as stored), None where its EXIF data is damaged: Pillow cannot read it
    (a bare "not a TIFF file" or struct.error for a PNG's or WebP's failed a whole batch), or, for a photo to turn,
    cannot write its EXIF block back, as turning it upright does (a TIFF's tags are not written back)."""
    try:
        exif = image.getexif()
        orientation = exif.get(ExifTags.Base.Orientation, 1)
        if orientation != 1 and {"exif", "Raw profile type exif"} & image.info.keys():
            exif.tobytes()
    except EXIF_ERRORS:
        return None
    return orientation if orientation in range(1, 9) else 1


def _reported_upright(image: Image.Image) -> bool:
    """Whether Pillow reports the image's size already turned by its orientation, as it does for a TIFF (12.3):
    the width is the stored height."""
    if image.format != "TIFF":
        return False
    return image.size == (image.tag_v2.get(TiffImagePlugin.IMAGELENGTH), image.tag_v2.get(TiffImagePlugin.IMAGEWIDTH))


def check_header(image: Image.Image, name: str, max_pixels: int = MAX_IMAGE_PIXELS) -> None:
    """InvalidImageError for an opened image that declares too much: its size (`_check_size`), and for a TIFF its
    tiles, which libtiff allocates whole (a 226-byte 64x64 TIFF declaring one 46336x46336 tile took 2.3 GB)."""
    _check_size(image.size, name, max_pixels)
    if image.format == "TIFF":
        tile = (image.tag_v2.get(TiffImagePlugin.TILEWIDTH, 0), image.tag_v2.get(TiffImagePlugin.TILELENGTH, 0))
        if tile[0] * tile[1] > max(image.width * image.height, MAX_TILE_PIXELS):
            raise InvalidImageError(f"{name}: a {image.width}x{image.height} TIFF of {tile[0]}x{tile[1]} tiles")


def _check_size(size: tuple[int, int], name: str, max_pixels: int = MAX_IMAGE_PIXELS) -> None:
    width, height = size
    if width < 1 or height < 1:
        raise InvalidImageError(f"{name}: the image is empty ({width}x{height})")
    if width * height > max_pixels:
        raise InvalidImageError(
            f"{name}: {width}x{height} is {width * height / 1e6:.3g} MP, over the {max_pixels / 1e6:.3g} MP limit"
        )


# Process-wide settings that reading changes for a moment (Pillow's TIFF decoder, the warning filters), one thread at
# a time: threads restored each other's copies, which left the program's filters changed and, rarely, a TIFF read
# with the wrong decoder (not turned upright).
_PROCESS_SETTINGS = threading.Lock()


@contextlib.contextmanager
def _libtiff_for_every_tiff():
    """Pillow (12.3) decodes an uncompressed TIFF of a quarter-turn orientation into stripes of the wrong size;
    libtiff, which it uses for every compressed TIFF, decodes it right. Pillow picks the decoder as it opens. Holds
    the process settings' lock, under which the caller may change others."""
    with _PROCESS_SETTINGS:
        saved, TiffImagePlugin.READ_LIBTIFF = TiffImagePlugin.READ_LIBTIFF, True
        try:
            yield
        finally:
            TiffImagePlugin.READ_LIBTIFF = saved


def _is_a_video(source: Path | io.BytesIO) -> bool:
    """Whether the file starts as a video container does (VIDEO_SIGNATURES), by its first 12 bytes; not a HEIF or
    AVIF photo, whose boxes are MP4's."""
    start = b""
    if isinstance(source, io.BytesIO):
        start = source.getvalue()[:12]
    else:
        with contextlib.suppress(OSError), open(source, "rb") as file:
            start = file.read(12)
    if start[4:8] == b"ftyp" and start[8:12] in PHOTO_BRANDS:
        return False
    return any(start[offset:].startswith(signature) for offset, signature in VIDEO_SIGNATURES)


def _opened(source: Path | io.BytesIO, name: str, max_pixels: int = MAX_IMAGE_PIXELS) -> Image.Image:
    """Opens lazily: only the header is read, so the size is checked before decoding."""
    try:
        with _libtiff_for_every_tiff(), warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # `_check_size` applies instead
            return Image.open(source, formats=read_formats())
    except UnidentifiedImageError as error:
        if _is_a_video(source):
            raise InvalidImageError(f"{name}: {A_VIDEO}") from error
        raise InvalidImageError(f"{name}: {NOT_AN_IMAGE}") from error
    except Image.DecompressionBombError as error:  # Pillow's own limit, twice its MAX_IMAGE_PIXELS, far above ours
        pixels = re.search(r"\((\d+) pixels\)", str(error))
        declared = f"is {int(pixels[1]) / 1e6:.3g} MP" if pixels else "declares too many pixels"
        raise InvalidImageError(f"{name}: {declared}, over the {max_pixels / 1e6:.3g} MP limit") from error
    except DECODING_ERRORS as error:
        raise InvalidImageError(f"{name}: not a readable image ({error})") from error


def _decoded(image: Image.Image, name: str, owned: bool = True, used: str = "colorized") -> LoadedImage:
    """The loaded image, turned upright: in place where this module opened or made it, else as a new image (the
    caller's is never changed); its warnings say what of it was `used`."""
    check_header(image, name)
    if image.mode not in SUPPORTED_MODES:
        raise InvalidImageError(f"{name}: unsupported image mode {image.mode!r}")
    # seeking a TIFF's page sets it up again, as exif_transpose loading it does
    with _libtiff_for_every_tiff() if image.format == "TIFF" else contextlib.nullcontext():
        return _loaded_upright(image, name, owned, used)


def _loaded_upright(image: Image.Image, name: str, owned: bool, used: str) -> LoadedImage:
    try:
        image.load()
    except DECODING_ERRORS as error:
        raise InvalidImageError(f"{name}: cannot decode the image ({error or type(error).__name__})") from error
    if image.mode == "F":
        _check_float_pixels(np.asarray(image), f"{name}: the image")
    if image.mode == "I" and not 0 <= (extrema := image.getextrema())[0] <= extrema[1] <= 65535:
        raise InvalidImageError(
            f"{name}: 32-bit integer pixels from {extrema[0]} to {extrema[1]}: letcolor reads 0-65535 (16-bit) gray"
        )
    warnings = _frames_warning(image, name, used) + _preview_warning(image, name, used)
    if _orientation(image) is None:
        warnings += (f"{name}: its EXIF data is damaged and was ignored (the photo is taken as stored, not turned)",)
        return LoadedImage(image if owned else image.copy(), warnings)
    if owned:
        ImageOps.exif_transpose(image, in_place=True)
    else:
        image = ImageOps.exif_transpose(image)
    return LoadedImage(image, warnings)


def _frames_warning(image: Image.Image, name: str, used: str) -> tuple[str, ...]:
    """A warning where the image has more frames than the one `used`: the current one, the first unless a caller's
    image was moved to another."""
    if image.format in ("MPO", "PSD"):  # a camera's MPO JPEG: the photo, then previews or a stereo partner; a PSD's
        return ()  # "frames" are its layers, and its flattened image is what is read
    current = image.tell()
    shown = "the first" if current == 0 else f"frame {current + 1}"
    try:
        frames = _frame_count(image)  # decodes the later frames' headers
    except Exception as error:  # a damaged later frame: IndexError, struct.error, SyntaxError, TypeError...
        try:
            image.seek(current)
            image.load()
        except Exception as reload_error:
            raise InvalidImageError(f"{name}: cannot decode the image ({reload_error})") from error
        return (f"{name}: its frames after the first are damaged ({type(error).__name__}); only {shown} was {used}",)
    except BaseException:  # an interrupt: Pillow's count leaves the image on a later frame (a caller's, reused, then
        with contextlib.suppress(Exception):  # gave that frame)
            image.seek(current)
            image.load()
        raise
    return (f"{name}: has {frames} frames (animated or multi-page); only {shown} was {used}",) if frames != 1 else ()


def _preview_warning(image: Image.Image, name: str, used: str) -> tuple[str, ...]:
    """A warning where a TIFF's image is marked as a reduced-resolution copy of one in its sub-images (a DNG's
    preview: Pillow does not read sub-images)."""
    if not isinstance(image, TiffImagePlugin.TiffImageFile):
        return ()
    subfile_type, sub_images = image.tag_v2.get(TIFF_NEW_SUBFILE_TYPE), image.tag_v2.get(TIFF_SUB_IFDS)
    if not sub_images or not isinstance(subfile_type, int) or not subfile_type & 1:
        return ()
    return (f"{name}: its {image.width}x{image.height} image is a reduced-resolution preview of one in a sub-image (as "
            f"in a DNG raw file, which letcolor does not read); the preview was {used}",)  # fmt: skip


def _frame_count(image: Image.Image) -> int | str:
    """How many frames the image has; for a TIFF of several pages, "several": Pillow counts pages by reading each
    one's tags, in time that grows with their square (100,000 1x1 pages: 72 s), and with the tags' size (1,100 pages
    sharing one table of 250,000 strips: 0.7 s each)."""
    if image.format == "TIFF":
        return "several" if getattr(image, "is_animated", False) else 1
    return getattr(image, "n_frames", 1)


def _check_float_pixels(values: np.ndarray, what: str) -> None:
    """Float pixels must be finite and in [0, 1] (a little outside, as rounding leaves, is clipped): 0-255 values
    would come out a white photo."""
    if not np.isfinite(values).all():
        raise InvalidImageError(f"{what} has NaN or infinite values")
    low, high = float(values.min()), float(values.max())
    if low < -FLOAT_PIXEL_SLACK or high > 1 + FLOAT_PIXEL_SLACK:
        raise InvalidImageError(
            f"{what} has float pixels from {low:.4g} to {high:.4g}: they must be in [0, 1] (8-bit values? divide by "
            "255)"
        )


def _image_from_array(array: np.ndarray) -> Image.Image:
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[..., 0]
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[2] not in (3, 4)):
        raise InvalidImageError(f"expected an HxW, HxWx3 or HxWx4 array, got shape {array.shape}")
    if array.size == 0:
        raise InvalidImageError(f"the array is empty (shape {array.shape})")
    if not array.dtype.isnative:  # big-endian samples, as a file's raw bytes give them
        array = array.astype(array.dtype.newbyteorder("="))
    if array.dtype.kind == "f":
        _check_float_pixels(array, "the array")
        array = np.clip(array, 0, 1).astype(np.float32)
        if array.ndim == 3:
            array = np.round(array * 255).astype(np.uint8)
    elif array.dtype == np.uint16 and array.ndim == 3:
        array = np.round(array / 257).astype(np.uint8)
    elif array.dtype not in (np.uint8, np.uint16):
        raise InvalidImageError(f"unsupported array type {array.dtype} (use uint8, uint16 or float in [0, 1])")
    return Image.fromarray(np.ascontiguousarray(array))


def in_srgb(image: Image.Image) -> Image.Image:
    """An 8-bit gray or RGB image's, or a 16-bit gray one's, pixels in sRGB, through its ICC profile where it has one
    of another space (an Adobe RGB photo, a scan's gray curve); as they are without one, or with one that cannot be
    read or is not of the image's kind (taken as sRGB, as browsers do). 10- and 12-bit, 32-bit, float and CMYK images
    keep theirs unapplied."""
    data, kind = image.info.get("icc_profile"), _PROFILE_KINDS.get(image.mode)
    if not data or kind is None or (kind == "GRAY" and _gray_white_level(image) not in (255, 65535)):
        return image
    try:
        profile = ImageCms.ImageCmsProfile(io.BytesIO(data))
        if profile.profile.xcolor_space.strip() != kind:
            return image
        if kind == "GRAY":
            return _through_gray_levels(image, profile)
        if _maps_as_srgb(data):  # (transforming a whole photo for nothing is slow)
            return image
        return ImageCms.profileToProfile(image, profile, _SRGB, outputMode="RGB")
    except (OSError, ValueError, ImageCms.PyCMSError):  # (a colour space of bytes that are not ASCII: ValueError)
        return image


@functools.lru_cache(maxsize=16)
def _maps_as_srgb(data: bytes) -> bool:
    """Whether an RGB profile takes colours to sRGB unchanged, to a level: a grid of colours through it (colorimetric,
    as any version of sRGB's maps so). Its name says less: Elle Stone's linear "sRGB-elle-V4-g10" was taken for sRGB,
    and its photos came out much too dark."""
    profile = ImageCms.ImageCmsProfile(io.BytesIO(data))
    grid = Image.fromarray(np.array(_COLOUR_GRID, np.uint8)[None])
    through = ImageCms.profileToProfile(grid, profile, _SRGB, renderingIntent=1, outputMode="RGB")
    return int(np.abs(np.asarray(through, np.int16) - np.asarray(grid, np.int16)).max()) <= 1


def _through_gray_levels(image: Image.Image, profile: ImageCms.ImageCmsProfile) -> Image.Image:
    """A gray image through a table of its levels' transforms from `profile` to sRGB's curve: transforming a whole
    photo is slow."""
    if image.mode == "L":
        ramp = Image.frombytes("L", (256, 1), bytes(range(256)))
        return image.point(list(ImageCms.profileToProfile(ramp, profile, _SRGB_GRAY, outputMode="L").tobytes()))
    ramp = Image.fromarray(np.arange(65536, dtype=np.uint16).reshape(256, 256))
    levels = np.asarray(ImageCms.profileToProfile(ramp, profile, _SRGB_GRAY, outputMode="I;16")).ravel()
    return Image.fromarray(levels[np.asarray(image)])


def image_pixels(image: Image.Image) -> Pixels:
    """The pixels of a `load_image` result as a tensor (gray or sRGB), with the alpha channel apart."""
    keyed = "transparency" in image.info  # a palette's transparent entry, or a PNG's colour key (tRNS)
    if image.mode == "P":  # (a palette of RGBA colours has no key: Pillow's own quantize of an RGBA image)
        image = image.convert("RGBA" if image.has_transparency_data else "RGB")
    elif image.mode in ("L", "RGB") and keyed:
        image = image.convert(f"{image.mode}A")
    if image.mode in _CONVERSIONS:
        converted = image.convert(_CONVERSIONS[image.mode])
        if image.mode == "CMYK":  # its profile is not for the RGB of Pillow's plain conversion
            converted.info.pop("icc_profile", None)
        image = converted
    alpha = image.getchannel("A") if image.mode in ("LA", "RGBA") else None
    if image.mode in ("LA", "RGBA"):
        image = image.convert(image.mode[:-1])
    if keyed and image.mode in _GRAY_WHITE_LEVELS and alpha is None:  # 16-bit gray: Pillow keeps no alpha for it
        key = image.info["transparency"]  # a stored level: before the profile is applied
        alpha = Image.fromarray(np.where(np.array(image) == key, 0, 255).astype(np.uint8))
    array = np.array(in_srgb(image))
    values = torch.from_numpy(array.astype(array.dtype.newbyteorder("="), copy=False))  # torch: native order only
    if image.mode == "RGB":
        return Pixels(values.permute(2, 0, 1), 255, alpha)
    return Pixels(values[None], _gray_white_level(image), alpha)


def _gray_white_level(image: Image.Image) -> float:
    """The value of white in a gray image: a TIFF of 10 or 12 bits a sample (Pillow's I;16, of values to 1023 or 4095)
    has its own (it came out almost black)."""
    bits = image.tag_v2.get(TiffImagePlugin.BITSPERSAMPLE) if isinstance(image, TiffImagePlugin.TiffImageFile) else None
    bits = bits[0] if isinstance(bits, tuple) else bits
    if image.mode.startswith("I;16") and isinstance(bits, int) and 8 < bits < 16:
        return 2**bits - 1
    return _GRAY_WHITE_LEVELS[image.mode]
