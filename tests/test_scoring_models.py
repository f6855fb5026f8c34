"""CLIP-T/I, DINO, LPIPS and FID through the same loaders real weights use, on tiny random
models of the same architectures, against independent computations."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from fmu.core.scoring.weights import MetricUnavailable

CLIP_MEAN = np.array([0.48145466, 0.4578275, 0.40821073])
CLIP_STD = np.array([0.26862954, 0.26130258, 0.27577711])


def _images(n, size, seed=0):
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, (1, size, size, 3))
    # correlated images so similarities are not all ~0
    return [np.clip(base + rng.integers(-60, 60, (size, size, 3)), 0, 255).astype(np.uint8)[0] for _ in range(n)]


def test_clip_t_and_clip_i_equal_clipmodel_logits(tiny_clip):
    from transformers import CLIPModel, CLIPTokenizer

    from fmu.core.scoring.clip_score import ClipScorer, clip_i, clip_t

    scorer = ClipScorer(str(tiny_clip))
    outs, refs = _images(3, 32, 1), _images(3, 32, 2)
    prompts = ["a red face", "smile", "a woman with glasses, outdoors"]
    got_t = clip_t(scorer.text_embeddings(prompts), scorer.image_embeddings(outs))
    got_i = clip_i(scorer.image_embeddings(refs), scorer.image_embeddings(outs))

    # independent: preprocessing by hand (32 px images need no resize), CLIPModel's own
    # forward, and cosine recovered from its logits (logit_scale.exp() * cosine).
    model = CLIPModel.from_pretrained(tiny_clip).eval()
    tok = CLIPTokenizer.from_pretrained(tiny_clip)
    px = lambda ims: torch.tensor(np.stack([(im / 255.0 - CLIP_MEAN) / CLIP_STD for im in ims]),  # noqa: E731
                                  dtype=torch.float32).permute(0, 3, 1, 2)
    ids = tok(prompts, padding=True, return_tensors="pt")
    with torch.no_grad():
        out = model(input_ids=ids["input_ids"], attention_mask=ids["attention_mask"], pixel_values=px(outs))
        cos_t = (out.logits_per_image / model.logit_scale.exp()).numpy()
        emb_o = model(input_ids=ids["input_ids"], pixel_values=px(outs)).image_embeds.numpy()
        emb_r = model(input_ids=ids["input_ids"], pixel_values=px(refs)).image_embeds.numpy()
    np.testing.assert_allclose(got_t, 100 * np.diag(cos_t), atol=1e-3)
    expected_i = [float(a @ b / np.linalg.norm(a) / np.linalg.norm(b)) for a, b in zip(emb_r, emb_o)]
    np.testing.assert_allclose(got_i, expected_i, atol=1e-5)
    assert np.ptp(got_t) > 0.1   # the prompts really differ


def test_dino_cls_cosine(tmp_path):
    from transformers import ViTConfig, ViTModel

    from fmu.core.scoring.dino import DinoScorer, _image_processor_class, dino_similarity

    torch.manual_seed(0)
    ViTModel(ViTConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37,
                       image_size=32, patch_size=16), add_pooling_layer=False).save_pretrained(tmp_path)
    mean, std = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
    _image_processor_class()(size={"height": 32, "width": 32}, image_mean=mean, image_std=std).save_pretrained(tmp_path)
    scorer = DinoScorer(str(tmp_path))
    outs, refs = _images(2, 32, 3), _images(2, 32, 4)
    got = dino_similarity(scorer.embeddings(refs), scorer.embeddings(outs))
    model = ViTModel.from_pretrained(tmp_path, add_pooling_layer=False).eval()
    px = lambda ims: torch.tensor(np.stack([(im / 255.0 - mean) / std for im in ims]),  # noqa: E731
                                  dtype=torch.float32).permute(0, 3, 1, 2)
    with torch.no_grad():
        cls_r = model(pixel_values=px(refs)).last_hidden_state[:, 0].numpy()
        cls_o = model(pixel_values=px(outs)).last_hidden_state[:, 0].numpy()
    expected = [a @ b / np.linalg.norm(a) / np.linalg.norm(b) for a, b in zip(cls_r, cls_o)]
    np.testing.assert_allclose(got, expected, atol=1e-5)


def test_missing_hub_weights_are_unavailable_not_a_crash(tmp_path):
    from fmu.core.scoring.clip_score import ClipScorer
    from fmu.core.scoring.dino import DinoScorer
    from fmu.core.scoring.fid import FidScorer
    from fmu.core.scoring.lpips import LpipsScorer

    for make in (lambda: ClipScorer("nobody/no-such-clip"), lambda: DinoScorer(str(tmp_path / "nope")),
                 lambda: LpipsScorer(tmp_path), lambda: FidScorer(tmp_path / "x.pth")):
        with pytest.raises(MetricUnavailable):
            make()


ALEX = [(3, 64, 11), (64, 192, 5), (192, 384, 3), (384, 256, 3), (256, 256, 3)]


def _lpips_reference(backbone: dict, lins: dict, a: np.ndarray, b: np.ndarray) -> float:
    """LPIPS written out with functional ops from the two state dicts."""
    def feats(img):
        x = torch.tensor(img, dtype=torch.float32).permute(2, 0, 1)[None] / 127.5 - 1
        shift, scale = torch.tensor([-.030, -.088, -.188]), torch.tensor([.458, .448, .450])
        x = (x - shift.view(1, 3, 1, 1)) / scale.view(1, 3, 1, 1)
        out = []
        for j, (idx, stride, pad) in enumerate(((0, 4, 2), (3, 1, 2), (6, 1, 1), (8, 1, 1), (10, 1, 1))):
            if j in (1, 2):
                x = F.max_pool2d(x, 3, 2)
            x = F.relu(F.conv2d(x, backbone[f"features.{idx}.weight"], backbone[f"features.{idx}.bias"],
                                stride=stride, padding=pad))
            out.append(x)
        return out
    total = 0.0
    for j, (fa, fb) in enumerate(zip(feats(a), feats(b))):
        na = fa / (fa.norm(dim=1, keepdim=True) + 1e-10)
        nb = fb / (fb.norm(dim=1, keepdim=True) + 1e-10)
        total += float((((na - nb) ** 2) * lins[f"lin{j}.model.1.weight"].view(1, -1, 1, 1)).sum(1).mean())
    return total


def test_lpips_matches_functional_reference(tmp_path):
    from fmu.core.scoring.lpips import LpipsScorer

    g = torch.Generator().manual_seed(0)
    backbone = {}
    for idx, (cin, cout, k) in zip((0, 3, 6, 8, 10), ALEX):
        backbone[f"features.{idx}.weight"] = torch.randn(cout, cin, k, k, generator=g) * (2 / (cin * k * k)) ** 0.5
        backbone[f"features.{idx}.bias"] = torch.randn(cout, generator=g) * 0.01
    backbone["classifier.1.weight"] = torch.zeros(4, 4)   # present in the real file; must be ignored
    lins = {f"lin{j}.model.1.weight": torch.rand(1, c, 1, 1, generator=g)
            for j, c in enumerate((64, 192, 384, 256, 256))}
    torch.save(backbone, tmp_path / "alexnet-owt-7be5be79.pth")
    torch.save(lins, tmp_path / "alex.pth")
    scorer = LpipsScorer(tmp_path)
    imgs = _images(3, 256, 5)
    got = scorer.distances(imgs[:2], [imgs[2], imgs[2]])
    for v, a in zip(got, imgs[:2]):
        assert v == pytest.approx(_lpips_reference(backbone, lins, a, imgs[2]), rel=1e-4)
    assert scorer.distances([imgs[0]], [imgs[0]])[0] == pytest.approx(0.0, abs=1e-7)
    assert got.min() > 0


def test_frechet_distance_closed_forms():
    from scipy.linalg import sqrtm

    from fmu.core.scoring.fid import fid_from_features, frechet_distance

    # diagonal covariances: FID = |mu1-mu2|^2 + sum (sqrt(a) - sqrt(b))^2
    a, b = np.array([1.0, 4.0, 9.0]), np.array([4.0, 1.0, 1.0])
    mu1, mu2 = np.array([0.0, 1.0, 2.0]), np.array([1.0, 1.0, 0.0])
    assert frechet_distance(mu1, np.diag(a), mu2, np.diag(b)) == pytest.approx(5 + 1 + 1 + 4)
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(50, 6)), rng.normal(size=(40, 6)) @ rng.normal(size=(6, 6)) + 1
    s1, s2 = np.cov(x, rowvar=False), np.cov(y, rowvar=False)
    expected = (np.sum((x.mean(0) - y.mean(0)) ** 2) + np.trace(s1) + np.trace(s2)
                - 2 * np.trace(sqrtm(sqrtm(s1) @ s2 @ sqrtm(s1)).real))
    assert frechet_distance(x.mean(0), s1, y.mean(0), s2) == pytest.approx(expected, rel=1e-6)
    assert fid_from_features(x, y) == pytest.approx(expected, rel=1e-6)


def test_fid_inception_layout_and_set_fid(tmp_path):
    from fmu.core.scoring.fid import FidScorer, feature_stats, frechet_distance
    from fmu.core.scoring.inception_fid import FIDInceptionV3

    torch.manual_seed(0)
    net = FIDInceptionV3()
    # torchvision Inception3 without aux head has 23,834,568 parameters with 1000 classes;
    # the FID graph has 1008 classes: +8 * 2049.
    assert sum(p.numel() for p in net.parameters()) == 23_834_568 + 8 * 2049
    shapes = {k: tuple(v.shape) for k, v in net.state_dict().items()}
    assert shapes["Conv2d_1a_3x3.conv.weight"] == (32, 3, 3, 3)
    assert shapes["Mixed_7c.branch_pool.conv.weight"] == (192, 2048, 1, 1)
    assert shapes["fc.weight"] == (1008, 2048)
    # calibrate BatchNorm on noise so random activations neither vanish nor explode
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.momentum = None
    net.train()
    with torch.no_grad():
        net.pool3(torch.rand(4, 3, 96, 96))
    state = {k: v for k, v in net.state_dict().items() if not k.endswith("num_batches_tracked")}
    torch.save(state, tmp_path / "pt_inception-2015-12-05-6726825d.pth")

    scorer = FidScorer(tmp_path / "pt_inception-2015-12-05-6726825d.pth")
    outs, refs = _images(3, 64, 7), _images(3, 80, 8)   # sizes differ: the net resizes to 299
    value = scorer.fid(outs, refs)
    net.eval()
    to01 = lambda ims: torch.tensor(np.stack(ims) / 255.0, dtype=torch.float32).permute(0, 3, 1, 2)  # noqa: E731
    with torch.no_grad():
        fo, fr = net.pool3(to01(outs)).double().numpy(), net.pool3(to01(refs)).double().numpy()
    assert fo.std() > 1e-3
    assert value == pytest.approx(frechet_distance(*feature_stats(fo), *feature_stats(fr)), rel=1e-4)
    assert value > 0
    assert scorer.fid(outs, outs) == pytest.approx(0.0, abs=1e-3 * value)
    with pytest.raises(MetricUnavailable):
        scorer.fid(outs[:1], refs)


def test_clip_and_dino_in_bf16_stay_close_to_fp32(tiny_clip, tmp_path):
    """`fmu score --precision bf16`: the embedding models run in bf16 (pixels cast to it, features
    back as float32). bf16 keeps 8 significant bits (~0.4 % per rounding): each bf16 embedding stays
    the nearest to its own fp32 embedding among all the images' (cosine > 0.999), and the scores move
    by less than 0.01 in cosine (measured: at most 0.0043)."""
    from transformers import ViTConfig, ViTModel

    from fmu.core.scoring.clip_score import ClipScorer, clip_i, clip_t
    from fmu.core.scoring.dino import DinoScorer, _image_processor_class, dino_similarity

    images, prompts = _images(3, 32, 5) + _images(3, 32, 6), ["a red face", "smile", "a woman with glasses, outdoors"]
    torch.manual_seed(0)
    ViTModel(ViTConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37,
                       image_size=32, patch_size=16), add_pooling_layer=False).save_pretrained(tmp_path)
    _image_processor_class()(size={"height": 32, "width": 32}).save_pretrained(tmp_path)
    emb = {}
    for dtype in (torch.float32, torch.bfloat16):
        clip, dino = ClipScorer(str(tiny_clip), dtype=dtype), DinoScorer(str(tmp_path), dtype=dtype)
        assert clip.model.dtype == dino.model.dtype == dtype
        emb[dtype] = {"image": clip.image_embeddings(images), "text": clip.text_embeddings(prompts),
                      "dino": dino.embeddings(images)}
    for kind, full in emb[torch.float32].items():
        half = emb[torch.bfloat16][kind]
        assert half.dtype == np.float32 and not np.array_equal(half, full)   # bf16 really ran
        cos = half @ full.T                                                  # unit vectors
        assert (np.diag(cos) > 0.999).all(), (kind, np.diag(cos))
        assert (np.argmax(cos, axis=1) == np.arange(len(full))).all(), kind
    for dtype in emb:
        e = emb[dtype]
        emb[dtype]["scores"] = (clip_t(e["text"], e["image"][:3]) / 100, clip_i(e["image"][3:], e["image"][:3]),
                                dino_similarity(e["dino"][3:], e["dino"][:3]))
    for full, half in zip(emb[torch.float32]["scores"], emb[torch.bfloat16]["scores"]):
        np.testing.assert_allclose(half, full, atol=0.01)
