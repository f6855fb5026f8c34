"""Tiny ONNX models in the exact formats of insightface's packs, for tests and offline runs.

They live beside the `tiny` preset (presets.py, tiny_tokenizer.py) because they are the same kind
of thing: stand-in weights built from code, so that the real loaders run with no download. The
face-analysis package (core/faces) only ever reads packs; it does not build them.

No ArcFace/SCRFD weights can be downloaded here, so these files stand in for a buffalo_l
pack. They are loaded through the same `insightface.model_zoo.get_model` routing as the
real files (SCRFD is recognised by its 9 outputs, ArcFaceONNX by its square 112 input) and
run through the same decoding, alignment and preprocessing code.

They prove the plumbing, not recognition quality:
- the detector does not look for faces. It is *planted*: it reports the faces it was built
  with (positions given as fractions of the detector input), and only where the image is
  not blank (local texture gates the score, so a uniform image has no face);
- the recognition model is a random 2-conv network: its embeddings are deterministic and
  respond to the pixels of the aligned crop, but say nothing about who is in it.

The graphs are written with `onnx.helper` so that node names, input/output layouts and
dynamic dimensions are exactly what insightface inspects.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 17
IR_VERSION = 8                      # accepted by every onnxruntime from 1.14 on
STRIDES = (8, 16, 32)               # SCRFD "_kps" family: 3 levels, 2 anchors per cell
NUM_ANCHORS = 2
PLANT_STRIDE = 32                   # the level the planted faces are reported on
DETECTOR_FILE = "det_10g.onnx"      # buffalo_l's file names, so a tiny pack looks like the real one
RECOGNIZER_FILE = "w600k_r50.onnx"

# insightface's 112x112 ArcFace landmark template (utils/face_align.arcface_dst), used to give
# a planted face box a plausible 5-point layout.
ARCFACE_TEMPLATE = np.array(
    [[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366],
     [41.5493, 92.3655], [70.7299, 92.2041]], dtype=np.float64)


class _Graph:
    """Collects nodes and initializers; every node gets a predictable lower-case name."""

    def __init__(self):
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self._count = 0

    def const(self, value, dtype=np.float32) -> str:
        name = f"c{len(self.inits)}"
        self.inits.append(numpy_helper.from_array(np.asarray(value, dtype=dtype), name))
        return name

    def op(self, op_type: str, *inputs: str, **attrs) -> str:
        self._count += 1
        out = f"t{self._count}"
        # Lower-case names on purpose: ArcFaceONNX treats a graph whose first nodes are named
        # "Sub*"/"Mul*" as an mxnet export with in-graph normalisation.
        self.nodes.append(helper.make_node(op_type, list(inputs), [out],
                                           name=f"n{self._count}_{op_type.lower()}", **attrs))
        return out

    def rename(self, tensor: str, name: str) -> str:
        return self.op_named("Identity", name, tensor)

    def op_named(self, op_type: str, out: str, *inputs: str, **attrs) -> str:
        self._count += 1
        self.nodes.append(helper.make_node(op_type, list(inputs), [out],
                                           name=f"n{self._count}_{op_type.lower()}", **attrs))
        return out

    def save(self, path: Path, name: str, inputs, outputs) -> Path:
        graph = helper.make_graph(self.nodes, name, inputs, outputs, initializer=self.inits)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                                  producer_name="fmu.tiny_onnx")
        model.ir_version = IR_VERSION
        onnx.checker.check_model(model)
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        onnx.save(model, str(path))
        return path


# --------------------------------------------------------------------------- recognition

def write_tiny_arcface(path: Path, seed: int = 0, dim: int = 512) -> Path:
    """An ArcFace-format recognition model: input (N,3,112,112) RGB float, output (N, dim).

    insightface feeds it `(pixel - 127.5) / 127.5`, channels RGB. Two strided 3x3 convs +
    ReLU, a 4x4 average-pool grid (so the embedding depends on where things are in the crop)
    and a linear layer, all with random weights from `seed`.
    """
    rng = np.random.default_rng(seed)
    g = _Graph()

    def he(shape, fan_in):
        return (rng.standard_normal(shape) * np.sqrt(2.0 / fan_in)).astype(np.float32)

    x = "input.1"
    h = g.op("Conv", x, g.const(he((8, 3, 3, 3), 27)), g.const(rng.normal(0, 0.1, 8)),
             kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])            # 56x56
    h = g.op("Relu", h)
    h = g.op("Conv", h, g.const(he((16, 8, 3, 3), 72)), g.const(rng.normal(0, 0.1, 16)),
             kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])            # 28x28
    h = g.op("Relu", h)
    h = g.op("AveragePool", h, kernel_shape=[7, 7], strides=[7, 7])             # 4x4
    h = g.op("Flatten", h, axis=1)                                              # (N, 256)
    g.op_named("Gemm", "embedding", h, g.const(he((256, dim), 256)),
               g.const(rng.normal(0, 0.1, dim)))
    return g.save(
        path, "tiny_arcface",
        [helper.make_tensor_value_info(x, TensorProto.FLOAT, ["N", 3, 112, 112])],
        [helper.make_tensor_value_info("embedding", TensorProto.FLOAT, ["N", dim])],
    )


# --------------------------------------------------------------------------- detection

def template_kps(box: Sequence[float]) -> np.ndarray:
    """A 5-point layout (eyes, nose, mouth corners) inside `box`, from the ArcFace template."""
    x1, y1, x2, y2 = map(float, box)
    return np.stack([x1 + ARCFACE_TEMPLATE[:, 0] / 112.0 * (x2 - x1),
                     y1 + ARCFACE_TEMPLATE[:, 1] / 112.0 * (y2 - y1)], axis=1)


def letterbox_scale(image_hw: tuple[int, int], det_size: int = 640) -> float:
    """The factor SCRFD.detect resizes an image by before padding it into det_size x det_size.

    Mirrors `SCRFD._detect_candidates` (int() truncation included).
    """
    h, w = image_hw
    if h / w > 1.0:
        new_h = det_size
    else:
        new_h = int(det_size * (h / w))
    return new_h / h


def plant_face(image_hw: tuple[int, int], box: Sequence[float], kps: np.ndarray | None = None,
               det_size: int = 640) -> tuple[np.ndarray, np.ndarray]:
    """(box, kps) in image pixels -> detector-input fractions, as `write_tiny_scrfd` wants."""
    box = np.asarray(box, dtype=np.float64)
    kps = template_kps(box) if kps is None else np.asarray(kps, dtype=np.float64)
    scale = letterbox_scale(image_hw, det_size) / det_size
    return box * scale, kps * scale


def centered_face() -> tuple[np.ndarray, np.ndarray]:
    """The default planted face: a box over the middle of the detector input."""
    box = np.array([0.3, 0.25, 0.7, 0.75])
    return box, template_kps(box)


def _check_planted(faces, det_size: int = 640) -> None:
    cells = set()
    for box, kps in faces:
        box, kps = np.asarray(box), np.asarray(kps)
        if box.shape != (4,) or kps.shape != (5, 2):
            raise ValueError("each planted face is (box (4,), kps (5, 2)) in detector fractions")
        if not (box.min() >= 0.0 and box.max() <= 1.0):
            raise ValueError(f"planted box {box.tolist()} is not within [0, 1]")
        cell = tuple(np.floor((box[:2] + box[2:]) / 2 * det_size / PLANT_STRIDE + 0.5))
        if cell in cells:
            raise ValueError("two planted faces share one detector cell; move them apart")
        cells.add(cell)


def _texture_gate(g: _Graph, x: str, blank_texture: float) -> str:
    """Per anchor, sigmoid(1e4 * (texture - blank_texture)): ~1 where the stride-32 cell has detail.
    Texture per stride-32 cell: mean over the cell of |d/dx| + |d/dy|, summed over channels (in
    insightface's normalised units, (p - 127.5) / 128). Zero on a uniform image."""
    dx = g.op("Conv", x, g.const(np.tile(np.array([[-1.0, 1.0], [0.0, 0.0]]), (1, 3, 1, 1))),
              kernel_shape=[2, 2], pads=[0, 0, 1, 1])
    dy = g.op("Conv", x, g.const(np.tile(np.array([[-1.0, 0.0], [1.0, 0.0]]), (1, 3, 1, 1))),
              kernel_shape=[2, 2], pads=[0, 0, 1, 1])
    energy = g.op("AveragePool", g.op("Add", g.op("Abs", dx), g.op("Abs", dy)),
                  kernel_shape=[PLANT_STRIDE, PLANT_STRIDE], strides=[PLANT_STRIDE, PLANT_STRIDE])
    # One value per anchor, in SCRFD's anchor order (row-major cells, a cell's anchors adjacent).
    energy = g.op("Reshape", g.op("Mul", g.op("Reshape", energy, g.const([-1, 1], np.int64)),
                                  g.const(np.ones((1, NUM_ANCHORS)))), g.const([-1, 1], np.int64))
    return g.op("Sigmoid", g.op("Mul", g.op("Sub", energy, g.const(blank_texture)), g.const(1e4)))


def _input_size(g: _Graph, x: str) -> tuple[str, str, str]:
    """The input's height, width (int64 scalars) and (2,) float W, H."""
    shape = g.op("Shape", x)
    height = g.op("Gather", shape, g.const(2, np.int64))
    width = g.op("Gather", shape, g.const(3, np.int64))
    wh = g.op("Cast", g.op("Concat", g.op("Unsqueeze", width, g.const([0], np.int64)),
                           g.op("Unsqueeze", height, g.const([0], np.int64)), axis=0),
              to=TensorProto.FLOAT)                                               # (2,) W, H
    return height, width, wh


def _anchor_grid(g: _Graph, height: str, width: str, stride: int) -> tuple[str, str]:
    """The anchor points of one stride, (K, 2) in pixels, and a (h, w, A) zero tensor."""
    h_cells = g.op("Div", height, g.const(stride, np.int64))
    w_cells = g.op("Div", width, g.const(stride, np.int64))
    one = g.const(1, np.int64)
    zero = g.const(0, np.int64)
    ys = g.op("Mul", g.op("Cast", g.op("Range", zero, h_cells, one), to=TensorProto.FLOAT),
              g.const(float(stride)))
    xs = g.op("Mul", g.op("Cast", g.op("Range", zero, w_cells, one), to=TensorProto.FLOAT),
              g.const(float(stride)))
    ys = g.op("Unsqueeze", ys, g.const([1, 2], np.int64))                    # (h,1,1)
    xs = g.op("Unsqueeze", xs, g.const([0, 2], np.int64))                    # (1,w,1)
    zeros = g.op("Mul", g.op("Add", ys, xs), g.const(np.zeros(NUM_ANCHORS)))  # (h,w,A)
    # Anchor order = SCRFD's: row-major cells, the A anchors of one cell adjacent.
    ax = g.op("Reshape", g.op("Add", zeros, xs), g.const([-1, 1], np.int64))   # (K,1)
    ay = g.op("Reshape", g.op("Add", zeros, ys), g.const([-1, 1], np.int64))
    return g.op("Concat", ax, ay, axis=1), zeros                               # (K,2)


def _planted_outputs(g: _Graph, points: str, zeros: str, wh: str, gate: str, planted, stride: int):
    """Score, bbox and kps outputs of the planting stride: the anchor nearest each face centre
    reports that face; `planted`: (centres, boxes, kps) as fractions of the input."""
    centers, boxes, kpss = planted
    first_anchor = g.op("Reshape", g.op("Add", zeros, g.const([1.0] + [0.0] * (NUM_ANCHORS - 1))),
                        g.const([-1, 1], np.int64))                          # (K,1)
    # The anchor nearest each face centre, clamped onto the grid: (F,2) in pixels.
    last = g.op("ReduceMax", points, axes=[0], keepdims=1)                     # (1,2)
    cells = g.op("Div", g.op("Mul", g.const(centers), wh), g.const(float(stride)))
    nearest = g.op("Mul", g.op("Floor", g.op("Add", cells, g.const(0.5))), g.const(float(stride)))
    target = g.op("Min", nearest, last)
    hit = g.op("Cast", g.op("Equal", g.op("Unsqueeze", points, g.const([1], np.int64)),
                            g.op("Unsqueeze", target, g.const([0], np.int64))),
               to=TensorProto.FLOAT)                                           # (K,F,2)
    mask = g.op("Mul", g.op("ReduceMin", hit, axes=[2], keepdims=0), first_anchor)   # (K,F)
    score = g.op("Min", g.op("ReduceSum", mask, g.const([1], np.int64), keepdims=1), g.const(1.0))
    score = g.op("Mul", score, gate)
    weight = g.op("Unsqueeze", mask, g.const([2], np.int64))                  # (K,F,1)

    # SCRFD decodes x1 = ax - d0*s, y1 = ay - d1*s, x2 = ax + d2*s, y2 = ay + d3*s.
    box_px = g.op("Mul", g.const(boxes), g.op("Tile", wh, g.const([2], np.int64)))      # (F,4)
    anchor4 = g.op("MatMul", points, g.const([[1, 0, 1, 0], [0, 1, 0, 1]]))           # (K,4)
    dist = g.op("Mul", g.op("Sub", g.op("Unsqueeze", anchor4, g.const([1], np.int64)),
                            g.op("Unsqueeze", box_px, g.const([0], np.int64))),
                g.const(np.array([1, 1, -1, -1]) / stride))                           # (K,F,4)
    bbox = g.op("ReduceSum", g.op("Mul", dist, weight), g.const([1], np.int64), keepdims=0)
    # ... and keypoint k = a + d_k*s.
    kps_px = g.op("Mul", g.const(kpss), g.op("Tile", wh, g.const([5], np.int64)))      # (F,10)
    anchor10 = g.op("MatMul", points, g.const(np.tile([[1, 0], [0, 1]], 5)))          # (K,10)
    kdist = g.op("Div", g.op("Sub", g.op("Unsqueeze", kps_px, g.const([0], np.int64)),
                             g.op("Unsqueeze", anchor10, g.const([1], np.int64))),
                 g.const(float(stride)))
    return score, bbox, g.op("ReduceSum", g.op("Mul", kdist, weight), g.const([1], np.int64), keepdims=0)


def write_tiny_scrfd(path: Path, faces: Sequence[tuple[np.ndarray, np.ndarray]] | None = None,
                     blank_texture: float = 1e-3) -> Path:
    """An SCRFD-format detector (dynamic input (1,3,H,W); 9 outputs: score/bbox/kps for strides
    8/16/32 with 2 anchors per cell, exactly what insightface's SCRFD class decodes).

    `faces`: [(box (4,), kps (5, 2)), ...] as fractions of the detector input (x by width,
    y by height); `plant_face` converts image pixels. Default: `centered_face()`.
    Each face is reported by the stride-32 anchor nearest its box centre, with score
    sigmoid(1e4 * (texture - blank_texture)), texture being the mean absolute pixel gradient
    of that anchor's 32x32 cell: 1.0 where a photo has any detail (a face centre always
    does), ~0 where the image is uniform there (a blank image has no face). Box and keypoint
    regressions are exact, so insightface decodes the planted coordinates back to within
    float rounding. Every other anchor scores 0.
    """
    faces = [centered_face()] if faces is None else list(faces)
    _check_planted(faces)
    boxes = np.array([np.asarray(b, np.float64) for b, _ in faces], dtype=np.float32)
    kpss = np.array([np.asarray(k, np.float64).reshape(10) for _, k in faces], dtype=np.float32)
    centers = (boxes[:, :2] + boxes[:, 2:]) / 2

    g = _Graph()
    x = "input.1"
    gate = _texture_gate(g, x, blank_texture)
    height, width, wh = _input_size(g, x)
    scores, bboxes, kpses = [], [], []
    for stride in STRIDES:
        points, zeros = _anchor_grid(g, height, width, stride)
        if stride != PLANT_STRIDE:
            scores.append(g.op("MatMul", points, g.const(np.zeros((2, 1)))))
            bboxes.append(g.op("MatMul", points, g.const(np.zeros((2, 4)))))
            kpses.append(g.op("MatMul", points, g.const(np.zeros((2, 10)))))
            continue
        score, bbox, kps = _planted_outputs(g, points, zeros, wh, gate, (centers, boxes, kpss), stride)
        scores.append(score)
        bboxes.append(bbox)
        kpses.append(kps)

    outputs = []
    for kind, tensors, width_ in (("score", scores, 1), ("bbox", bboxes, 4), ("kps", kpses, 10)):
        for stride, tensor in zip(STRIDES, tensors):
            name = g.rename(tensor, f"{kind}_{stride}")
            outputs.append(helper.make_tensor_value_info(name, TensorProto.FLOAT,
                                                         [f"anchors_{stride}", width_]))
    return g.save(
        path, "tiny_scrfd",
        [helper.make_tensor_value_info(x, TensorProto.FLOAT, [1, 3, "height", "width"])],
        outputs,
    )


def write_tiny_pack(directory: Path, pack: str = "buffalo_l", faces=None, seed: int = 0,
                    dim: int = 512) -> Path:
    """`directory/pack/` with a tiny detector and recognizer under buffalo_l's file names."""
    folder = Path(directory) / pack
    write_tiny_scrfd(folder / DETECTOR_FILE, faces=faces)
    write_tiny_arcface(folder / RECOGNIZER_FILE, seed=seed, dim=dim)
    return folder
