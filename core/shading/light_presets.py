"""Lights asked for by name or by numbers -> the renderer's 9 SH coefficients (lighting.py's basis).

One text value, three spellings (the manifest's `light` column, `fmu shade --light`, `fmu expand
--light`):
- a preset name from `PRESETS` (`front`, `left`, ...; case does not matter);
- `az=<deg>,el=<deg>[,strength=<s>][,ambient=<a>]`: one directional light plus ambient;
- nine numbers (commas and/or spaces, brackets allowed): SH coefficients in lighting.py's order
  and units, used exactly as given.

Directions live in the view frame (x right, y up, z toward the viewer): azimuth `az` turns from
the camera toward the image's RIGHT (so `left` = az -90 lights the half of the face on the
image's left, the subject's right), elevation `el` turns up:
    d = (cos el sin az, sin el, cos el cos az).

Projection (Ramamoorthi & Hanrahan 2001, "An efficient representation for irradiance environment
maps"): a distant light of strength s from direction d lights a Lambertian point with normal n by
s max(0, n.d). Expanded in real SH, that clamped cosine is s sum_lm A_l Y_lm(d) Y_lm(n) with the
zonal coefficients A_0 = pi, A_1 = 2 pi / 3, A_2 = pi / 4; the renderer shades with
sum_k sh_k Y_k(n) (albedo folded into sh), so a light's coefficients are sh_k = s A_l(k) Y_k(d).
Cut at order 2 the expansion gives 1.0625 s facing the light, 0.094 s at grazing and 0.0625 s
facing away (the exact values: s, 0, 0). Ambient a is the constant a = sh_0 Y_00, so sh_0 += a / Y_00.

The default balance (strength 0.6, ambient 0.25) gives a face lit from the front about the grey
levels of fitted photos (0.9 facing the light, 0.3 at the silhouette); SH fitted to photos carry
the photo's albedo and exposure, presets do not: the same preset is the same light for every
reference, and `light_error` compares normalised SH, so the scale does not count there.
"""

from __future__ import annotations

import math

import numpy as np

from .lighting import sh_basis

CLAMPED_COSINE = np.array([math.pi] + [2 * math.pi / 3] * 3 + [math.pi / 4] * 5)  # A_l per coefficient
Y00 = 0.282095
STRENGTH = 0.6   # default directional strength of `az=..,el=..`
AMBIENT = 0.25   # default ambient of `az=..,el=..`

# name -> (ambient, ((az, el, strength), ...), what it looks like)
PRESETS: dict[str, tuple[float, tuple[tuple[float, float, float], ...], str]] = {
    "front": (AMBIENT, ((0.0, 0.0, STRENGTH),), "from the camera: evenly lit, edges darker"),
    "left": (AMBIENT, ((-90.0, 0.0, STRENGTH),), "from the image's left (the subject's right): that half bright"),
    "right": (AMBIENT, ((90.0, 0.0, STRENGTH),), "from the image's right (the subject's left)"),
    "top": (AMBIENT, ((0.0, 90.0, STRENGTH),), "from above: forehead and nose ridge bright, chin dark"),
    "bottom": (AMBIENT, ((0.0, -90.0, STRENGTH),), "from below: chin and jaw bright"),
    "key-left": (AMBIENT, ((-45.0, 30.0, STRENGTH),), "portrait key light, high on the image's left"),
    "key-right": (AMBIENT, ((45.0, 30.0, STRENGTH),), "portrait key light, high on the image's right"),
    "rim": (0.1, ((-120.0, 0.0, 0.5), (120.0, 0.0, 0.5)), "two lights behind, either side: bright edges"),
    "flat": (0.7, (), "ambient only: no shading, only the silhouette"),
}
ALIASES = {"ambient": "flat"}

# inclusive bounds of the `az=..` keys; SH numbers beyond +-MAX_SH are a typo, not a light
KEY_BOUNDS = {"az": (-180.0, 180.0), "el": (-90.0, 90.0), "strength": (0.0, 2.0), "ambient": (0.0, 1.0)}
MAX_SH = 10.0

_NUMBER_CHARS = frozenset("0123456789+-.eE")
MAX_LIGHT_CHARS = 512   # nine numbers fit many times over


class LightError(ValueError):
    """A light value that cannot be used; `kind` is the manifest's error kind for it."""

    def __init__(self, message: str, kind: str = "bad_light"):
        super().__init__(message)
        self.kind = kind


def direction(az: float, el: float) -> np.ndarray:
    """Unit vector in the view frame toward a light at azimuth `az`, elevation `el` (degrees)."""
    a, e = math.radians(az), math.radians(el)
    return np.array([math.cos(e) * math.sin(a), math.sin(e), math.cos(e) * math.cos(a)])


def directional_sh(az: float, el: float, strength: float) -> np.ndarray:
    """The 9 coefficients of s max(0, n.d) (module doc)."""
    return strength * CLAMPED_COSINE * sh_basis(direction(az, el))


def ambient_sh(ambient: float) -> np.ndarray:
    sh = np.zeros(9)
    sh[0] = ambient / Y00
    return sh


def lights_sh(ambient: float, lights) -> np.ndarray:
    """Ambient plus a sum of (az, el, strength) lights, as 9 SH coefficients."""
    sh = ambient_sh(ambient)
    for az, el, strength in lights:
        sh = sh + directional_sh(az, el, strength)
    return sh


def preset_names() -> list[str]:
    return [*PRESETS, *ALIASES]


def parse_light(text: str) -> np.ndarray:
    """A light value (module doc) -> (9,) float64 SH coefficients; LightError when unusable."""
    value = str(text).strip()
    name = value.lower()
    name = ALIASES.get(name, name)
    if name in PRESETS:
        ambient, lights, _ = PRESETS[name]
        return lights_sh(ambient, lights)
    if "=" in value:
        return _parse_directional(value)
    sh = _numbers(value)
    if sh is not None:
        if sh.size != 9:
            raise LightError(f"light {_short(value)}: {sh.size} numbers; SH lighting takes exactly 9")
        if np.any(np.abs(sh) > MAX_SH):
            raise LightError(f"light {value!r}: SH coefficients lie within [-{MAX_SH:g}, {MAX_SH:g}]",
                             kind="out_of_range")
        return sh
    raise LightError(f"light {value!r} is not a preset ({', '.join(preset_names())}), "
                     "az=<deg>,el=<deg>[,strength=<s>][,ambient=<a>] or nine SH numbers")


def _short(value: str) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _numbers(value: str) -> np.ndarray | None:
    """`[a, b, ...]` / `a b ...` / `a,b,...` -> the numbers, None when any part is not one. Split then
    float, no regex: a long almost-number value must not backtrack (`"1111 " * 14 + "x"` hung a
    regex). float's own spellings of nan/inf are refused: only plain decimal numbers count."""
    if len(value) > MAX_LIGHT_CHARS:
        raise LightError(f"light {_short(value)}: longer than {MAX_LIGHT_CHARS} characters")
    body = value.removeprefix("[").removesuffix("]").strip().removesuffix(",")
    parts = body.replace(",", " ").split()
    if not parts or any(not _NUMBER_CHARS.issuperset(p) for p in parts):
        return None
    try:
        return np.array([float(p) for p in parts], dtype=np.float64)
    except ValueError:
        return None


def _parse_directional(value: str) -> np.ndarray:
    keys: dict[str, float] = {}
    for part in (p.strip() for p in value.split(",")):
        key, sep, number = (s.strip() for s in part.partition("="))
        key = key.lower()
        if not sep or key not in KEY_BOUNDS:
            raise LightError(f"light {value!r}: {part!r} is not one of "
                             f"{', '.join(k + '=' for k in KEY_BOUNDS)}")
        if key in keys:
            raise LightError(f"light {value!r}: {key} given twice")
        try:
            keys[key] = float(number)
        except ValueError:
            raise LightError(f"light {value!r}: {key}={number!r} is not a number") from None
        lo, hi = KEY_BOUNDS[key]
        if not (math.isfinite(keys[key]) and lo <= keys[key] <= hi):
            raise LightError(f"light {value!r}: {key}={number} outside [{lo:g}, {hi:g}]", kind="out_of_range")
    if "az" not in keys and "el" not in keys:
        raise LightError(f"light {value!r}: give the direction, az=<deg> and/or el=<deg>")
    return lights_sh(keys.get("ambient", AMBIENT),
                     ((keys.get("az", 0.0), keys.get("el", 0.0), keys.get("strength", STRENGTH)),))
