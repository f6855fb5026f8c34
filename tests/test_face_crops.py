"""The two CLIP face-image styles, on the shipped photos."""

import numpy as np
import pytest
from PIL import Image


@pytest.fixture(scope="module")
def backend_dlib():
    from fmu.core.faces import get_backend

    return get_backend("dlib")


def test_wide_crop_is_the_authors_box_resized_as_clip_would(backend_dlib, astronaut):
    import cv2
    from transformers import CLIPImageProcessor

    from fmu.core.faces.crops import wide_box, wide_crop

    face = max(backend_dlib.detect(astronaut), key=lambda f: f.area)
    pts = np.asarray(face.landmarks, np.float64).reshape(-1, 2)
    # the authors' formula, spelled out: box of the landmarks, centre kept, longer side x 3
    w_box, h_box = np.ptp(pts[:, 0]), np.ptp(pts[:, 1])
    cx, cy = (pts[:, 0].min() + pts[:, 0].max()) / 2, (pts[:, 1].min() + pts[:, 1].max()) / 2
    side = 3.0 * max(w_box, h_box)
    expected = (max(0, int(cx - side / 2)), max(0, int(cy - side / 2)),
                min(512, int(cx + side / 2)), min(512, int(cy + side / 2)))
    assert wide_box(face.landmarks, astronaut.shape) == expected
    x1, y1, x2, y2 = expected
    assert x1 <= face.bbox[0] and y1 <= face.bbox[1] and x2 >= face.bbox[2]  # wider than the face box

    crop = wide_crop(astronaut, face.landmarks)
    assert crop.shape == (224, 224, 3) and crop.dtype == np.uint8
    # what CLIP sees is the same as from the authors' 512 crop: storing it at 224 loses nothing
    full = cv2.resize(np.ascontiguousarray(astronaut[y1:y2, x1:x2]), (512, 512))
    proc = CLIPImageProcessor()
    np.testing.assert_array_equal(proc(images=[crop], return_tensors="np").pixel_values,
                                  proc(images=[full], return_tensors="np").pixel_values)


def test_analysis_and_cache_keep_the_styles_apart(backend_dlib, photos, tmp_path):
    from fmu.core.faces.cache import FaceCache
    from fmu.core.faces.crops import wide_crop

    aligned = FaceCache(tmp_path, backend_dlib).analyse_file(photos["astronaut.png"])
    wide_cache = FaceCache(tmp_path, backend_dlib, crop="wide")
    wide = wide_cache.analyse_file(photos["astronaut.png"])
    assert wide_cache.analyses == 1  # not served from the aligned entry
    np.testing.assert_array_equal(aligned.embedding, wide.embedding)
    image = np.asarray(Image.open(photos["astronaut.png"]).convert("RGB"))
    np.testing.assert_array_equal(wide.crop, wide_crop(image, wide.landmarks))
    assert not np.array_equal(aligned.crop, wide.crop)
    with pytest.raises(ValueError):
        backend_dlib.analyse(image, crop="tight")
