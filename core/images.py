"""Reading images safely and writing them atomically.

Every image fmu reads goes through `load_rgb`, so format quirks (EXIF rotation, 16-bit,
CMYK, alpha, animation) and hostile files (decompression bombs, truncation) are handled in
one place and surface as `ImageError` with a one-line reason.
"""

from __future__ import annotations

import io
import os
import uuid
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import ImageError

# 64 MP is far above any face photo and far below what would exhaust memory when decoded.
MAX_PIXELS = 64_000_000
MIN_SIDE = 16
# A 64 MP photo is well under 200 MB in any format fmu reads (uncompressed 16-bit RGB TIFF aside);
# a bigger file is padded or not a photo, and reading it whole could exhaust memory.
MAX_FILE_BYTES = 200 * 2**20


def check_file_size(path: str | os.PathLike, size: int | None = None) -> None:
    """Raise ImageError (file_too_large) for a file over MAX_FILE_BYTES, before any byte is read."""
    size = os.stat(path).st_size if size is None else size
    if size > MAX_FILE_BYTES:
        raise ImageError(f"{path}: {size / 2**20:,.0f} MB is over the {MAX_FILE_BYTES // 2**20} MB limit "
                         "for an image file (padded, or not a photo)", kind="file_too_large")


def check_size(width: int, height: int, source: str) -> None:
    """Raise ImageError when an image of this size must not be decoded (bomb) or is unusable."""
    if width * height > MAX_PIXELS:
        raise ImageError(
            f"{source}: {width}x{height} exceeds the {MAX_PIXELS:,}-pixel limit "
            "(possible decompression bomb)", kind="image_too_large")
    if min(width, height) < MIN_SIDE:
        raise ImageError(f"{source}: {width}x{height} is too small (min side {MIN_SIDE})",
                         kind="image_too_small")


def _to_rgb(img: Image.Image) -> Image.Image:
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        # 16/32-bit grey: map the 16-bit range onto 8 bits instead of clipping everything to white.
        # Scale by the format's range, not the image's maximum: a dark photo must stay dark.
        arr = np.asarray(img, dtype=np.float64)
        sixteen = img.mode != "I" or (arr.size and arr.max() > 255)
        hi = 65535.0 if sixteen else 255.0
        img = Image.fromarray(np.clip(np.round(arr / hi * 255.0), 0, 255).astype(np.uint8))
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        img = img.convert("RGBA")
        background = Image.new("RGBA", img.size, (255, 255, 255, 255))
        img = Image.alpha_composite(background, img)
    return img.convert("RGB")


def decode_rgb(data: bytes, source: str = "image") -> np.ndarray:
    """Decode encoded image bytes to an (H, W, 3) uint8 RGB array, EXIF orientation applied."""
    if not data:
        raise ImageError(f"{source}: file is empty", kind="empty_file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
            check_size(img.width, img.height, source)  # before any pixel is decoded
            img.seek(0)  # animated formats: the first frame
            img.load()
            img = ImageOps.exif_transpose(img)
            return np.ascontiguousarray(np.asarray(_to_rgb(img), dtype=np.uint8))
    except ImageError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageError(f"{source}: {exc}", kind="image_too_large") from None
    except UnidentifiedImageError:
        raise ImageError(f"{source}: not a readable image", kind="not_an_image") from None
    except (OSError, ValueError, SyntaxError) as exc:
        raise ImageError(f"{source}: corrupt or truncated image ({exc})", kind="corrupt_image") from None


def load_rgb(path: str | os.PathLike) -> np.ndarray:
    path = Path(path)
    if not path.exists():
        raise ImageError(f"{path}: file not found", kind="missing_file")
    if not path.is_file():
        raise ImageError(f"{path}: not a regular file", kind="not_a_file")
    try:
        check_file_size(path)
        data = path.read_bytes()
    except OSError as exc:
        raise ImageError(f"{path}: cannot read ({exc.strerror})", kind="unreadable_file") from None
    return decode_rgb(data, str(path))


def centre_box(shape: tuple[int, ...]) -> tuple[int, int, int]:
    """(left, top, side) of the largest centred square of an image of this shape."""
    h, w = shape[:2]
    side = min(h, w)
    return (w - side) // 2, (h - side) // 2, side


def crop_square(image: np.ndarray, box: tuple[int, int, int], size: int) -> np.ndarray:
    """The square `box` = (left, top, side) of `image`, resized to `size`."""
    left, top, side = (int(v) for v in box)
    crop = Image.fromarray(image[top:top + side, left:left + side])
    return np.asarray(crop.resize((size, size), Image.Resampling.BICUBIC))


def to_square(image: np.ndarray, size: int) -> np.ndarray:
    """Centre-crop to a square and resize to `size` (the training frame, and the generation
    frame under `--frame centre`)."""
    return crop_square(image, centre_box(image.shape), size)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write to a temp file in the same folder, fsync, then rename: readers never see half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # not tempfile.mkstemp: its 0600 mode would survive the rename; os.open honours the umask
    tmp = path.parent / f".{path.name}.{uuid.uuid4().hex[:12]}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass  # never let the clean-up hide the error that matters
        raise


def encode_png(image: np.ndarray | Image.Image) -> bytes:
    img = image if isinstance(image, Image.Image) else Image.fromarray(np.asarray(image))
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def save_png(path: str | os.PathLike, image: np.ndarray | Image.Image) -> None:
    atomic_write_bytes(path, encode_png(image))
