"""The torch ArcFace against onnxruntime and insightface's own preprocessing and alignment."""

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from insightface.app.common import Face
from insightface.model_zoo.arcface_onnx import ArcFaceONNX
from insightface.utils import face_align
from onnx import TensorProto, helper, numpy_helper

from fmu.core.model.tiny_onnx import write_tiny_arcface
from fmu.training.id_encoder import IdEncoder, OnnxGraph, insightface_input_norm, similarity_to_template
from fmu.training.losses import identity_loss

DIM = 24


def write_resnet_arcface(path, mxnet_style=False, seed=0):
    """A tiny ResNet-style ArcFace (Conv/BN/PReLU/residual Add/pools/Gemm/BN1d), mxnet-style
    variants with in-graph Sub/Mul normalisation, Constant, Reshape and Dropout."""
    rng = np.random.default_rng(seed)
    inits, nodes = [], []

    def const(value, dtype=np.float32):
        name = f"w{len(inits)}"
        inits.append(numpy_helper.from_array(np.asarray(value, dtype=dtype), name))
        return name

    def op(op_type, *inputs, name=None, **attrs):
        out = f"x{len(nodes)}"
        nodes.append(helper.make_node(op_type, list(inputs), [out], name=name or f"n{len(nodes)}", **attrs))
        return out

    def bn(x, c):
        return op("BatchNormalization", x, const(1 + 0.1 * rng.standard_normal(c)), const(0.1 * rng.standard_normal(c)),
                  const(0.1 * rng.standard_normal(c)), const(0.5 + rng.random(c)), epsilon=2e-5)

    x = "data"
    if mxnet_style:
        nodes.append(helper.make_node("Constant", [], ["mean"], name="mean_const",
                                      value=numpy_helper.from_array(np.array(127.5, np.float32))))
        x = op("Sub", x, "mean", name="_minus0")
        x = op("Mul", x, const(0.0078125), name="_mul0")
    h = op("Conv", x, const(0.2 * rng.standard_normal((8, 3, 3, 3))), kernel_shape=[3, 3], strides=[2, 2],
           pads=[1, 1, 1, 1])                                                                   # 56
    h = op("PRelu", bn(h, 8), const(0.25 + 0.1 * rng.standard_normal((8, 1, 1))))
    branch = op("Conv", h, const(0.2 * rng.standard_normal((8, 8, 2, 2))), const(0.1 * rng.standard_normal(8)),
                kernel_shape=[2, 2], pads=[0, 0, 1, 1])                                         # asymmetric, 56
    h = op("Add", h, bn(branch, 8))
    h = op("MaxPool", h, kernel_shape=[2, 2], strides=[2, 2])                                   # 28
    h = op("Conv", h, const(0.3 * rng.standard_normal((8, 1, 3, 3))), kernel_shape=[3, 3], strides=[2, 2],
           pads=[1, 1, 1, 1], group=8)                                                          # 14
    h = op("Relu", h)
    h = op("AveragePool", h, kernel_shape=[7, 7], strides=[7, 7])                               # 2x2
    if mxnet_style:
        h = op("Dropout", op("Reshape", h, const([0, -1], np.int64)))
    else:
        h = op("Flatten", h, axis=1)
    h = op("Gemm", h, const(0.3 * rng.standard_normal((DIM, 32))), const(0.1 * rng.standard_normal(DIM)), transB=1)
    out = bn(h, DIM)
    graph = helper.make_graph(
        nodes, "tiny_resnet_arcface",
        [helper.make_tensor_value_info("data", TensorProto.FLOAT, ["N", 3, 112, 112])],
        [helper.make_tensor_value_info(out, TensorProto.FLOAT, ["N", DIM])], initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


@pytest.fixture(params=["resnet", "resnet_mxnet", "core_tiny"])
def arcface_file(request, tmp_path):
    path = tmp_path / "w600k_r50.onnx"
    if request.param == "core_tiny":
        return write_tiny_arcface(path, seed=3, dim=DIM)
    return write_resnet_arcface(path, mxnet_style=request.param == "resnet_mxnet")


def smooth_image(h, w, seed=0):
    """A smooth RGB image in [0, 1] (bilinear resampling error stays small on it)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w] / max(h, w)
    channels = [0.5 + 0.4 * np.sin(2 * np.pi * (rng.random() * 2 * x + rng.random() * 2 * y) + rng.random() * 6)
                for _ in range(3)]
    return np.stack(channels, -1).astype(np.float32)


def test_converted_graph_matches_onnxruntime(arcface_file):
    mean, std = insightface_input_norm(onnx.load(str(arcface_file)))
    pixels = np.random.default_rng(1).uniform(0, 255, (2, 3, 112, 112))
    blob = ((pixels - mean) / std).astype(np.float32)
    session = ort.InferenceSession(str(arcface_file), providers=["CPUExecutionProvider"])
    expected = session.run(None, {session.get_inputs()[0].name: blob})[0]
    ours = OnnxGraph(onnx.load(str(arcface_file)))(torch.from_numpy(blob)).detach().numpy()
    assert ours.shape == expected.shape == (2, DIM)
    assert np.abs(ours - expected).max() <= 1e-5 * max(1.0, np.abs(expected).max())


def test_embedding_equals_insightface_on_an_aligned_crop(arcface_file):
    bgr = (smooth_image(112, 112, seed=2)[..., ::-1] * 255).round().astype(np.uint8)
    reference = ArcFaceONNX(model_file=str(arcface_file))
    expected = reference.get_feat(bgr)[0]
    expected = expected / np.linalg.norm(expected)
    encoder = IdEncoder.from_onnx(arcface_file)
    assert (encoder.input_mean, encoder.input_std) == (reference.input_mean, reference.input_std)
    rgb = torch.from_numpy(bgr[..., ::-1].copy()).permute(2, 0, 1)[None].float() / 255
    ours = encoder.embed_crops(rgb)[0].numpy()
    assert np.abs(ours - expected).max() <= 1e-5
    assert np.linalg.norm(ours) == pytest.approx(1.0, abs=1e-6)


def test_landmark_crop_follows_insightface_norm_crop(tmp_path):
    encoder = IdEncoder.from_onnx(write_resnet_arcface(tmp_path / "r.onnx"))
    image = smooth_image(160, 200, seed=4)
    angle, scale, shift = 0.3, 1.4, np.array([40.0, 15.0])
    rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    lmk = (face_align.arcface_dst @ rot.T) * scale + shift
    lmk = lmk + np.random.default_rng(5).normal(0, 1.0, lmk.shape)     # not an exact similarity
    lmk = lmk.astype(np.float32)

    expected_m = face_align.estimate_norm(lmk, 112)
    ours_m = similarity_to_template(torch.from_numpy(lmk)[None])[0].numpy()
    assert np.abs(ours_m - expected_m).max() <= 1e-4

    expected_crop = face_align.norm_crop(image, lmk, 112)                # cv2.warpAffine, black fill
    tensor = torch.from_numpy(image).permute(2, 0, 1)[None]
    ours_crop = encoder.crop(tensor, landmarks=torch.from_numpy(lmk)[None])[0].permute(1, 2, 0).numpy()
    # Where each crop pixel samples the image: cv2 quantises positions to 1/32 pixel, which is
    # invisible on a smooth image but not on the blend with the black border, so compare the
    # crop pixels that sample strictly inside the image, and check the ones far outside are black.
    inverse = np.linalg.inv(np.vstack([expected_m, [0, 0, 1]]))
    ys, xs = np.mgrid[0:112, 0:112]
    src = np.einsum("ij,jhw->ihw", inverse, np.stack([xs, ys, np.ones_like(xs)]).astype(np.float64))
    inside = (src[0] >= 0) & (src[0] <= 199) & (src[1] >= 0) & (src[1] <= 159)
    outside = (src[0] < -1) | (src[0] > 200) | (src[1] < -1) | (src[1] > 160)
    assert inside.mean() > 0.5 and outside.mean() > 0.05
    assert np.abs(ours_crop - expected_crop)[inside].max() <= 2e-3
    assert np.abs(ours_crop[outside]).max() == 0 and np.abs(expected_crop[outside]).max() == 0

    face = Face(kps=lmk)
    expected_emb = ArcFaceONNX(model_file=str(tmp_path / "r.onnx")).get(
        (image[..., ::-1] * 255).astype(np.float32), face)
    ours_emb = encoder(tensor, landmarks=torch.from_numpy(lmk)[None])[0].numpy()
    assert float(ours_emb @ expected_emb / np.linalg.norm(expected_emb)) > 0.999


def test_box_crop_cuts_exactly_the_box_at_scale_one(tmp_path):
    encoder = IdEncoder.from_onnx(write_resnet_arcface(tmp_path / "r.onnx"))
    images = torch.rand(2, 3, 200, 180)
    boxes = torch.tensor([[10.0, 20.0, 122.0, 132.0], [60.0, 5.0, 172.0, 117.0]])
    crops = encoder.crop(images, boxes)
    # float32 grid coordinates are off by ~1e-4 pixel, on pixel noise of amplitude 1
    assert torch.allclose(crops[0], images[0, :, 20:132, 10:122], atol=1e-3)
    assert torch.allclose(crops[1], images[1, :, 5:117, 60:172], atol=1e-3)
    # twice the size: every crop pixel is the mean of a 2x2 block (bilinear at the block centre)
    big = encoder.crop(images, torch.tensor([[0.0, 0.0, 224.0, 224.0]] * 2))
    padded = torch.nn.functional.pad(images, (0, 44, 0, 24))
    assert torch.allclose(big[:, :, :99, :89], torch.nn.functional.avg_pool2d(padded, 2)[:, :, :99, :89],
                          atol=1e-3)


def test_gradient_reaches_the_pixels_of_the_face_only(tmp_path):
    encoder = IdEncoder.from_onnx(write_resnet_arcface(tmp_path / "r.onnx"))
    images = torch.rand(2, 3, 128, 128, requires_grad=True)
    boxes = torch.tensor([[20.0, 30.0, 84.0, 94.0], [0.0, 0.0, 128.0, 128.0]])
    reference = torch.nn.functional.normalize(torch.randn(2, DIM), dim=-1)
    embeddings = encoder(images, boxes)
    assert embeddings.shape == (2, DIM)
    identity_loss(reference, embeddings).backward()
    grad = images.grad.abs().sum(1)
    assert grad[0, 30:94, 20:84].sum() > 0 and grad[1].sum() > 0
    assert grad[0, :28].sum() == 0 and grad[0, :, 86:].sum() == 0
    assert all(p.grad is None for p in encoder.parameters()) and not list(encoder.parameters())


def test_unknown_ops_are_refused_by_name(tmp_path):
    node = helper.make_node("Erf", ["data"], ["out"])
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("data", TensorProto.FLOAT, [1, 3])],
                              [helper.make_tensor_value_info("out", TensorProto.FLOAT, [1, 3])])
    with pytest.raises(NotImplementedError, match="Erf"):
        OnnxGraph(helper.make_model(graph))
