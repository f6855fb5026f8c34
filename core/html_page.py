"""Pieces of the self-contained HTML pages fmu writes (score's report.html, prepare's preview.html):
images as inline JPEG data URIs, and the line that says how many of them a browser decoded."""

from __future__ import annotations

import base64
import io

import numpy as np
from PIL import Image

# After load, the page counts the images that decoded; tests read the two attributes in a browser.
IMAGE_CHECK = """<p id="img-check">checking images…</p>
<script>
window.addEventListener('load', function () {
  var imgs = Array.prototype.slice.call(document.images);
  var ok = imgs.filter(function (i) { return i.complete && i.naturalWidth > 0; }).length;
  var el = document.getElementById('img-check');
  el.setAttribute('data-loaded', ok); el.setAttribute('data-total', imgs.length);
  el.textContent = ok + ' of ' + imgs.length + ' images loaded';
});
</script>"""


def jpeg_data_uri(image: np.ndarray, size: int | None = None, quality: int = 85) -> str:
    """`image` as a JPEG data URI, shrunk to fit `size`×`size` first when a size is given."""
    img = Image.fromarray(np.asarray(image))
    if size is not None:
        img.thumbnail((size, size), Image.Resampling.LANCZOS)
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=quality)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode()
