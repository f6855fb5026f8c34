"""A differentiable ArcFace for L_id: insightface's recognition ONNX run as torch ops.

L_id needs gradients from the face embedding back to the decoded image, which onnxruntime
cannot give. `onnx2torch` would, but it requires torchvision (which breaks imports here), so
`OnnxGraph` interprets the graph itself: initializers become frozen buffers and each node
becomes the matching torch function, run in the file's (topological) order. It covers what
ResNet/MobileFaceNet ArcFace exports use and refuses anything else by name at load time.

Preprocessing is insightface's own (`model_zoo/arcface_onnx.py`): the network takes RGB
(it swaps cv2's BGR), (pixel − mean) / std with mean = std = 127.5, or 0 / 1 for mxnet
exports whose graph starts with Sub/Mul nodes. The face is cut from the decoded image with
`grid_sample` — by the 5-landmark similarity transform to the ArcFace template (what
`face_align.norm_crop` does) or by a box — so the crop itself is differentiable.
"""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import numpy as np
import onnx
import torch
import torch.nn.functional as F
from onnx import helper, numpy_helper

# insightface utils/face_align.arcface_dst: where the 5 landmarks land in a 112x112 crop.
ARCFACE_TEMPLATE = torch.tensor(
    [[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366],
     [41.5493, 92.3655], [70.7299, 92.2041]], dtype=torch.float64)


# ----------------------------------------------------------------------------- ONNX as torch

def _text(value):
    return value.decode() if isinstance(value, bytes) else value


def _conv(x, w, b=None, strides=None, pads=None, dilations=None, group=1, auto_pad="NOTSET",
          kernel_shape=None):
    if _text(auto_pad) not in ("NOTSET", "VALID"):
        raise NotImplementedError(f"Conv auto_pad={_text(auto_pad)}")
    n = w.ndim - 2
    pads = list(pads or [0] * 2 * n)
    begin, end = pads[:n], pads[n:]
    if begin != end:  # asymmetric: pad explicitly (F.pad lists the last axis first)
        x = F.pad(x, [p for i in reversed(range(n)) for p in (begin[i], end[i])])
        begin = [0] * n
    conv = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}[n]
    return conv(x, w, b, stride=strides or 1, padding=begin, dilation=dilations or 1, groups=group)


def _pool(pool):
    def run(x, kernel_shape, strides=None, pads=None, ceil_mode=0, count_include_pad=0,
            auto_pad="NOTSET", dilations=None, storage_order=0):
        n = len(kernel_shape)
        pads = list(pads or [0] * 2 * n)
        if pads[:n] != pads[n:] or _text(auto_pad) not in ("NOTSET", "VALID"):
            raise NotImplementedError("pooling with asymmetric or automatic padding")
        if pool == "avg":
            return F.avg_pool2d(x, kernel_shape, strides or kernel_shape, pads[:n], bool(ceil_mode),
                                bool(count_include_pad))
        return F.max_pool2d(x, kernel_shape, strides or kernel_shape, pads[:n], dilations or 1,
                            bool(ceil_mode))
    return run


def _gemm(a, b, c=None, alpha=1.0, beta=1.0, transA=0, transB=0):
    y = alpha * ((a.T if transA else a) @ (b.T if transB else b))
    return y if c is None else y + beta * c


def _reshape(x, shape, allowzero=0):
    shape = [int(s) for s in shape.tolist()]
    if not allowzero:  # 0 means "keep this dimension"
        shape = [x.shape[i] if s == 0 else s for i, s in enumerate(shape)]
    return x.reshape(shape)


def _gather(data, indices, axis=0):
    axis = axis % data.ndim
    flat = indices.long().reshape(-1) % data.shape[axis]
    out = torch.index_select(data, axis, flat)
    return out.reshape(data.shape[:axis] + indices.shape + data.shape[axis + 1:])


def _unsqueeze(x, axes):  # axes: an input from opset 13 on, an attribute before
    axes = axes.tolist() if torch.is_tensor(axes) else list(axes)
    axes = sorted(int(a) % (x.ndim + len(axes)) for a in axes)
    for axis in axes:
        x = x.unsqueeze(axis)
    return x


def _cast(x, to):
    return x.to(getattr(torch, np.dtype(helper.tensor_dtype_to_np_dtype(to)).name))


ONNX_OPS = {
    "Conv": _conv,
    "BatchNormalization": lambda x, scale, bias, mean, var, epsilon=1e-5, momentum=0.9, **_:
        F.batch_norm(x, mean, var, scale, bias, False, 0.0, epsilon),
    "PRelu": lambda x, slope: torch.where(x >= 0, x, x * slope),
    "Relu": lambda x: F.relu(x),
    "LeakyRelu": lambda x, alpha=0.01: F.leaky_relu(x, alpha),
    "Sigmoid": torch.sigmoid,
    "Tanh": torch.tanh,
    "Add": torch.add, "Sub": torch.sub, "Mul": torch.mul, "Div": torch.div,
    "MatMul": torch.matmul,
    "Gemm": _gemm,
    "Flatten": lambda x, axis=1: x.reshape(math.prod(x.shape[:axis]), -1),
    "Reshape": _reshape,
    "Transpose": lambda x, perm=None: x.permute(*(perm or reversed(range(x.ndim)))),
    "Concat": lambda *xs, axis: torch.cat(xs, dim=axis),
    "Shape": lambda x: torch.tensor(x.shape, dtype=torch.int64, device=x.device),
    "Gather": _gather,
    "Unsqueeze": _unsqueeze,
    "Cast": _cast,
    "Identity": lambda x: x,
    "Dropout": lambda x, *rest, **attrs: x,       # inference: identity
    "GlobalAveragePool": lambda x: x.mean(dim=tuple(range(2, x.ndim)), keepdim=True),
    "AveragePool": _pool("avg"),
    "MaxPool": _pool("max"),
}


class OnnxGraph(torch.nn.Module):
    """Runs an ONNX graph with torch ops: one input, first output returned, weights frozen."""

    def __init__(self, model: onnx.ModelProto):
        super().__init__()
        graph = model.graph
        tensors = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
        nodes = []
        for node in graph.node:
            attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
            if node.op_type == "Constant":
                tensors[node.output[0]] = numpy_helper.to_array(attrs["value"])
            else:
                nodes.append((node.op_type, list(node.input), node.output[0], attrs))
        unsupported = sorted({op for op, *_ in nodes} - ONNX_OPS.keys())
        if unsupported:
            raise NotImplementedError(f"ONNX ops not supported by the torch converter: {unsupported}")
        self._buffer_of = {}
        for i, (name, array) in enumerate(tensors.items()):
            self.register_buffer(f"t{i}", torch.from_numpy(np.array(array)))
            self._buffer_of[name] = f"t{i}"
        self.nodes = nodes
        self.input_name = next(i.name for i in graph.input if i.name not in tensors)
        self.output_name = graph.output[0].name

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        values = {name: getattr(self, buffer) for name, buffer in self._buffer_of.items()}
        values[self.input_name] = x
        for op, inputs, output, attrs in self.nodes:
            args = [values[name] if name else None for name in inputs]
            values[output] = ONNX_OPS[op](*args, **attrs)
        return values[self.output_name]


def insightface_input_norm(model: onnx.ModelProto) -> tuple[float, float]:
    """(mean, std) exactly as ArcFaceONNX decides them from the first 8 node names."""
    names = [node.name for node in model.graph.node[:8]]
    find_sub = any(n.startswith("Sub") or n.startswith("_minus") for n in names)
    find_mul = any(n.startswith("Mul") or n.startswith("_mul") for n in names)
    return (0.0, 1.0) if find_sub and find_mul else (127.5, 127.5)


# ----------------------------------------------------------------------------- face crops

def _pixel_to_normalised(width: int, height: int) -> torch.Tensor:
    """grid_sample (align_corners=False) coordinates of pixel centres: u = (2x + 1) / W − 1."""
    return torch.tensor([[2 / width, 0, 1 / width - 1], [0, 2 / height, 1 / height - 1], [0, 0, 1]],
                        dtype=torch.float64)


def warp_affine(images: torch.Tensor, out_to_in: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear warp like cv2.warpAffine (black outside), differentiable w.r.t. the images.

    out_to_in: (B, 2, 3) maps output pixel (x, y) to input pixel coordinates; size = (h, w).
    """
    batch, _, height, width = images.shape
    out_h, out_w = size
    full = torch.cat([out_to_in.double().cpu(), torch.tensor([[[0.0, 0.0, 1.0]]], dtype=torch.float64)
                      .expand(batch, 1, 3)], 1)
    theta = _pixel_to_normalised(width, height) @ full @ torch.linalg.inv(_pixel_to_normalised(out_w, out_h))
    # float32 at least: a bf16 grid would misplace samples by about a pixel on a 512 image
    work = images.float() if images.dtype in (torch.float16, torch.bfloat16) else images
    grid = F.affine_grid(theta[:, :2].to(work), (batch, images.shape[1], out_h, out_w), align_corners=False)
    return F.grid_sample(work, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def box_matrices(boxes: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Output→input affines that stretch the box (x1, y1, x2, y2; pixel edges) over the crop."""
    boxes = boxes.double()
    sx = (boxes[:, 2] - boxes[:, 0]) / size[1]
    sy = (boxes[:, 3] - boxes[:, 1]) / size[0]
    zero = torch.zeros_like(sx)
    # output pixel centre j sits at edge coordinate j + 0.5 → x1 + (j + 0.5)·sx, minus 0.5 for a centre
    return torch.stack([torch.stack([sx, zero, boxes[:, 0] + 0.5 * sx - 0.5], 1),
                        torch.stack([zero, sy, boxes[:, 1] + 0.5 * sy - 0.5], 1)], 1)


def similarity_to_template(landmarks: torch.Tensor, size: int = 112) -> torch.Tensor:
    """Least-squares similarity (B, 2, 3) taking the 5 landmarks onto the ArcFace template,
    as insightface's estimate_norm (skimage SimilarityTransform) does: [[a, −b, tx], [b, a, ty]]."""
    src = landmarks.double()
    dst = (ARCFACE_TEMPLATE * (size / 112.0)).to(src.device).expand_as(src)
    x, y = src[..., 0], src[..., 1]
    one, zero = torch.ones_like(x), torch.zeros_like(x)
    rows_u = torch.stack([x, -y, one, zero], -1)
    rows_v = torch.stack([y, x, zero, one], -1)
    system = torch.cat([rows_u, rows_v], 1)                           # (B, 10, 4)
    target = torch.cat([dst[..., 0], dst[..., 1]], 1).unsqueeze(-1)   # (B, 10, 1)
    a, b, tx, ty = torch.linalg.lstsq(system, target).solution[..., 0].unbind(-1)
    return torch.stack([torch.stack([a, -b, tx], 1), torch.stack([b, a, ty], 1)], 1)


def invert_affine(matrices: torch.Tensor) -> torch.Tensor:
    linear_inv = torch.linalg.inv(matrices[:, :, :2])
    return torch.cat([linear_inv, -linear_inv @ matrices[:, :, 2:]], 2)


# ----------------------------------------------------------------------------- the encoder

class IdEncoder(torch.nn.Module):
    """Frozen face-recognition network: RGB images in [0, 1] → L2-normalised embeddings."""

    def __init__(self, net: torch.nn.Module, input_size: int = 112, input_mean: float = 127.5,
                 input_std: float = 127.5):
        super().__init__()
        self.net = net.eval().requires_grad_(False)
        self.input_size, self.input_mean, self.input_std = input_size, input_mean, input_std

    @classmethod
    def from_onnx(cls, path: str | Path) -> IdEncoder:
        model = onnx.load(str(path))
        dims = model.graph.input[0].type.tensor_type.shape.dim
        size = dims[2].dim_value if len(dims) == 4 and dims[2].dim_value else 112
        mean, std = insightface_input_norm(model)
        return cls(OnnxGraph(model), input_size=size, input_mean=mean, input_std=std)

    def embed_crops(self, crops: torch.Tensor) -> torch.Tensor:
        """crops: (B, 3, S, S) aligned RGB faces in [0, 1] → (B, D) unit embeddings."""
        dtype = next(itertools.chain(self.net.parameters(), self.net.buffers())).dtype
        blob = (crops.to(dtype) * 255.0 - self.input_mean) / self.input_std
        return F.normalize(self.net(blob).float(), dim=-1)

    def crop(self, images: torch.Tensor, boxes: torch.Tensor | None = None,
             landmarks: torch.Tensor | None = None) -> torch.Tensor:
        """The network's input crop: by landmarks (B, 5, 2) like norm_crop, else by boxes (B, 4)."""
        size = (self.input_size, self.input_size)
        if landmarks is not None:
            out_to_in = invert_affine(similarity_to_template(landmarks, self.input_size))
        elif boxes is not None:
            out_to_in = box_matrices(boxes, size)
        else:
            raise ValueError("give boxes or landmarks to locate the face")
        return warp_affine(images, out_to_in, size)

    def forward(self, images: torch.Tensor, boxes: torch.Tensor | None = None, *,
                landmarks: torch.Tensor | None = None) -> torch.Tensor:
        """images: (B, 3, H, W) RGB in [0, 1] (e.g. the VAE decode of x̂0, rescaled) → (B, D)."""
        return self.embed_crops(self.crop(images, boxes, landmarks))
