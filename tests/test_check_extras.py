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
