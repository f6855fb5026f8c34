"""A corpus of bad (and awkward-but-fine) inputs, generated at test time: no committed binaries.

`write_corpus(folder, photos)` writes the files and returns the generate manifest's cases, each
with the EXACT outcome expected per image: status and the reason's kind (the text before ':').
"""

from __future__ import annotations

import io
import shutil
import struct
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

OK = ("ok", None)
BOMB_SIDE = 20_000
HUGE_BYTES = 3 * 2**30  # a real PNG padded to 3 GB (sparse: ~12 kB on disk)
UNICODE_DIR = "dossier ünï cödé"
UNICODE_NAME = "ästro naut 宇宙.png"


@dataclass
class Case:
    id: str
    reference: str
    prompt: str = "a photo of a person"
    expect: list[tuple[str, str | None]] = field(default_factory=lambda: [OK])  # (status, kind) per image k
    seed: str = ""
    num_images: str = ""
    guidance_scale: str = ""
    note: str = ""


def _chunk(tag: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)


def bomb_png(side: int = BOMB_SIDE) -> bytes:
    """A real, complete 1-bit PNG of side x side black pixels: ~50 kB on disk, side² pixels decoded
    (20000² = 400 MP, 1.2 GB as RGB). Streamed through zlib, so making it costs no memory."""
    comp = zlib.compressobj(9)
    row = b"\x00" * (1 + (side + 7) // 8)
    body = b"".join(comp.compress(row) for _ in range(side)) + comp.flush()
    return (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0))
            + _chunk(b"IDAT", body) + _chunk(b"IEND", b""))


def exif_rotated(upright: Image.Image) -> bytes:
    """The upright photo stored rotated 90° with EXIF Orientation=6 ("rotate 90° CW to view"):
    a viewer (and fmu) that honours the tag shows the upright face."""
    stored = upright.transpose(Image.Transpose.ROTATE_90)
    exif = Image.Exif()
    exif[0x0112] = 6
    buf = io.BytesIO()
    stored.save(buf, format="PNG", exif=exif)
    return buf.getvalue()


def write_files(folder: Path, photos: dict[str, Path]) -> dict[str, Path]:
    """Write every input file; returns name -> path."""
    folder.mkdir(parents=True, exist_ok=True)
    astro = Image.open(photos["astronaut.png"]).convert("RGB")
    files: dict[str, Path] = {}

    def put(name: str, data: bytes) -> None:
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(data)
        files[name] = folder / name

    for name in ("astronaut.png", "tom_hanks.png", "t1.jpg", "chelsea.png"):
        put(name, Path(photos[name]).read_bytes())
    put("empty.png", b"")
    put("truncated.jpg", Path(photos["t1.jpg"]).read_bytes()[:3000])
    put("png_named.jpg", Path(photos["astronaut.png"]).read_bytes())
    put("notes.jpg", b"this is a text file, not a picture\n" * 20)
    buf = io.BytesIO()
    Image.new("RGB", (1, 1), (200, 150, 120)).save(buf, format="PNG")
    put("one_pixel.png", buf.getvalue())
    put("bomb.png", bomb_png())
    for name, img, kw in [
        ("gray.png", astro.convert("L"), {}),
        ("rgba.png", _with_alpha(astro), {}),
        ("cmyk.jpg", astro.convert("CMYK"), {"quality": 95}),
        ("gray16.png", _sixteen_bit(astro), {}),
    ]:
        buf = io.BytesIO()
        img.save(buf, format="PNG" if name.endswith(".png") else "JPEG", **kw)
        put(name, buf.getvalue())
    put("rotated_exif.png", exif_rotated(astro))
    buf = io.BytesIO()
    astro.transpose(Image.Transpose.ROTATE_90).save(buf, format="PNG")  # the same pixels, no tag
    put("rotated_no_tag.png", buf.getvalue())
    put("bomb_100mp.png", bomb_png(10_000))  # above MAX_PIXELS, below PIL's own hard limit
    cat = Image.open(photos["chelsea.png"]).convert("RGB").resize(astro.size)
    buf = io.BytesIO()
    astro.save(buf, format="GIF", save_all=True, append_images=[cat], duration=100, loop=0)
    put("animated.gif", buf.getvalue())
    put(f"{UNICODE_DIR}/{UNICODE_NAME}", Path(photos["tom_hanks.png"]).read_bytes())
    put("huge.png", Path(photos["tom_hanks.png"]).read_bytes())  # padded to 3 GB below
    (folder / "a_folder.png").mkdir(exist_ok=True)
    pad_sparse(files["huge.png"])
    return files


def pad_sparse(path: Path, size: int = HUGE_BYTES) -> Path:
    """Extend a file to `size` bytes without writing them (a sparse file: zeros to every reader)."""
    with open(path, "r+b") as fh:
        fh.truncate(size)
    return path


def _with_alpha(img: Image.Image) -> Image.Image:
    rgba = img.convert("RGBA")
    alpha = np.full(img.size[::-1], 255, np.uint8)
    alpha[:40] = 0  # a transparent band at the top: composited on white
    rgba.putalpha(Image.fromarray(alpha))
    return rgba


def _sixteen_bit(img: Image.Image) -> Image.Image:
    grey = np.asarray(img.convert("L"), dtype=np.uint16) * 257  # full 16-bit range
    return Image.fromarray(grey)  # uint16 -> mode I;16, saved as a 16-bit greyscale PNG


def cases() -> list[Case]:
    """One generate manifest; expected outcome per image (k = 0..n-1)."""
    long_prompt = " ".join(["a highly detailed studio portrait photo with soft light"] * 12)
    fail = lambda kind, n=1: [("failed", kind)] * n  # noqa: E731
    return [
        Case("ok_png", "astronaut.png", note="control"),
        Case("missing", "nope.png", expect=fail("missing_file")),
        Case("zero_byte", "empty.png", expect=fail("empty_file")),
        Case("truncated_jpeg", "truncated.jpg", expect=fail("reference corrupt_image")),
        Case("png_named_jpg", "png_named.jpg", note="content decides, not the suffix"),
        Case("not_an_image", "notes.jpg", expect=fail("not_an_image")),
        Case("one_pixel", "one_pixel.png", expect=fail("image_too_small")),
        Case("bomb", "bomb.png", expect=fail("image_too_large")),
        Case("bomb_100mp", "bomb_100mp.png", expect=fail("image_too_large")),
        Case("huge_file", "huge.png", expect=fail("file_too_large"), note="a valid PNG padded to 3 GB"),
        Case("grayscale", "gray.png"),
        Case("rgba", "rgba.png"),
        Case("cmyk_jpeg", "cmyk.jpg"),
        Case("png16", "gray16.png"),
        Case("exif_rotated", "rotated_exif.png"),
        Case("sideways_no_tag", "rotated_no_tag.png", expect=fail("reference no_face"),
             note="control: without the tag the sideways face is not found"),
        Case("animated_gif", "animated.gif"),
        Case("no_face", "chelsea.png", expect=fail("reference no_face")),
        Case("many_faces", "t1.jpg", note="--multi-face largest"),
        Case("ok_png", "tom_hanks.png", expect=fail("duplicate_id"), note="duplicate id"),
        Case("../../escape", "astronaut.png", expect=fail("unsafe_id")),
        Case("/tmp/absolute", "astronaut.png", expect=fail("unsafe_id")),
        Case("sub/dir", "astronaut.png", expect=fail("unsafe_id")),
        Case("back\\slash", "astronaut.png", expect=fail("unsafe_id")),
        Case("unicode_path", f"{UNICODE_DIR}/{UNICODE_NAME}"),
        Case("empty_prompt", "astronaut.png", prompt="   ", expect=fail("empty_prompt")),
        Case("long_prompt", "astronaut.png", prompt=long_prompt, note="warning only"),
        Case("multiline_prompt", "astronaut.png", prompt="a portrait,\nsecond line, \"quoted\""),
        Case("nan_seed", "astronaut.png", seed="nan", expect=fail("wrong_type")),
        Case("negative_seed", "astronaut.png", seed="-1", expect=fail("out_of_range")),
        Case("huge_seed", "astronaut.png", seed=str(2**40), expect=fail("out_of_range")),
        Case("overflow_seed", "astronaut.png", seed="9" * 30, expect=fail("wrong_type")),
        Case("zero_images", "astronaut.png", num_images="0", expect=fail("out_of_range")),
        Case("text_guidance", "astronaut.png", guidance_scale="strong", expect=fail("wrong_type")),
        Case("url_reference", "https://example.com/face.png", expect=fail("url_not_supported")),
        Case("folder_reference", "a_folder.png", expect=fail("not_a_file")),
        Case("empty_reference", "", expect=fail("missing_reference")),
        Case("two_images", "tom_hanks.png", num_images="2", seed="5", expect=[OK, OK]),
    ]


# A CSV manifest with records that cannot be read: each fails its own row (kind, line), the others
# run. (line numbers are the file's, header = line 1)
BROKEN_CSV_LINES = [
    b"id,reference,prompt",
    b"ok1,tom_hanks.png,a photo",
    b"ragged,tom_hanks.png,a photo,one field too many",
    b"latin1,tom_hanks.png,caf\xe9 au lait",
    b'quote,tom_hanks.png,"a quote that never closes',
    b"ok2,tom_hanks.png,a photo",
    b'"multi","tom_hanks.png","two',
    b'lines, quoted"',
    b"ok3,tom_hanks.png,a photo",
]
BROKEN_CSV_EXPECT = [OK, ("failed", "malformed_row", 3), ("failed", "not_utf8", 4), ("failed", "malformed_row", 5),
                     OK, OK, OK]


def write_broken_csv(folder: Path) -> Path:
    path = folder / "broken.csv"
    path.write_bytes(b"\n".join(BROKEN_CSV_LINES) + b"\n")
    return path


def write_manifest(folder: Path, rows: list[Case]) -> Path:
    import csv

    path = folder / "manifest.csv"
    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["id", "reference", "prompt", "seed", "num_images", "guidance_scale"])
        for c in rows:
            w.writerow([c.id, c.reference, c.prompt, c.seed, c.num_images, c.guidance_scale])
    return path


def snapshot(*roots: Path, skip: tuple[Path, ...] = ()) -> dict[str, tuple[int, int]]:
    """path -> (size, mtime_ns) of every file and folder under `roots`, except under `skip`."""
    found = {}
    skip = tuple(Path(s).resolve() for s in skip)
    for root in roots:
        for p in Path(root).rglob("*"):
            rp = p.resolve() if not p.is_symlink() else p
            if any(rp == s or s in rp.parents for s in skip):
                continue
            st = p.lstat()
            found[str(p)] = (st.st_size if p.is_file() else -1, st.st_mtime_ns if p.is_file() else 0)
    return found


def peak_rss_mb_of(code: str, cwd: Path) -> tuple[float, str]:
    """Run `code` in a fresh interpreter; return (its peak RSS in MB, its stdout)."""
    import subprocess
    import sys

    wrapped = code + "\nimport resource, sys\nprint('PEAK_KB', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)\n"
    done = subprocess.run([sys.executable, "-c", wrapped], cwd=cwd, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    kb = next(int(line.split()[1]) for line in done.stdout.splitlines() if line.startswith("PEAK_KB"))
    return kb / 1024, done.stdout


def copy_photo(photos: dict[str, Path], name: str, dest: Path) -> Path:
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(photos[name], dest)
    return dest


