"""`fmu score`'s terminal table fits 80 columns: one line per metric, long notes (an unavailable
metric's reason) printed once below it, metrics sharing a reason sharing its number."""

from io import StringIO

from rich.console import Console

from fmu.core.scoring.summary_table import metric_lines, print_summary

CLIP = ("CLIP weights not found locally: openai/clip-vit-large-patch14 is not in the Hugging Face cache "
        "(nothing is downloaded); pass --clip-model DIR")
DINO = ("DINO weights not found locally: facebook/dino-vits16 is not in the Hugging Face cache (nothing is "
        "downloaded); pass --dino-model DIR")
FACESIM = {"available": True, "mean_strict": 0.41234, "mean_detected": 0.55, "n": 120, "n_no_face": 13,
           "match_rate_strict": 0.7, "scale": "cosine of ArcFace embeddings"}
SUMMARY = {
    "n_ok": 3, "n_requested": 4, "status_counts": {"ok": 3, "no_face": 1},
    "failures": [{"id": "a", "k": 0, "status": "no_face", "error": "output: no face detected in /tmp/" + "x" * 90}],
    "metrics": {
        "facesim_arcface": FACESIM, "facesim_dlib": {**FACESIM, "scale": "1 - euclidean distance"},
        "clip_t": {"available": False, "reason": CLIP}, "clip_i": {"available": False, "reason": CLIP},
        "dino": {"available": False, "reason": DINO},
        "lpips": {"available": True, "mean": 0.3, "n": 120, "scale": "LPIPS v0.1 AlexNet, reference vs output"},
        "fid": {"available": True, "value": 123.4, "n_outputs": 120, "n_references": 30, "note": "biased upward"},
        "pose_light": {"available": True, "pose_rmse_deg": 5.2, "light_rmse": 0.1, "n": 100, "n_no_fit": 20},
    },
}


def _render(width: int) -> list[str]:
    buf = StringIO()
    print_summary(Console(file=buf, width=width, color_system=None), SUMMARY)
    return buf.getvalue().splitlines()


def test_the_table_fits_80_columns_one_line_per_metric():
    lines = _render(80)
    assert max(len(line) for line in lines) <= 80
    names = [m[0] for m in metric_lines(SUMMARY)]
    rule = next(i for i, line in enumerate(lines) if set(line.strip()) == {"─"})
    rows = lines[rule + 1: rule + 1 + len(names)]
    assert [row.split()[0] for row in rows] == names   # no row folded onto a second line
    assert lines[rule + 1 + len(names)].startswith("(1) ")


def test_long_reasons_are_printed_once_below_the_table():
    text = "\n".join(_render(400))   # wide: nothing wraps, so whole reasons can be counted
    assert text.count(CLIP) == 1 and text.count(DINO) == 1
    rows = {line.split()[0]: line.split()[-1] for line in text.splitlines() if line.split()[:1]
            and line.split()[0] in ("clip_t", "clip_i", "dino")}
    assert rows["clip_t"] == rows["clip_i"] != rows["dino"]          # one reason, one number
    assert f"{rows['clip_t']} {CLIP}" in text and f"{rows['dino']} {DINO}" in text
