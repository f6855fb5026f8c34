"""Several people in the model (core/model/masked_identity.py): each person's ID tokens act only inside
that person's box, in the IP-Adapter attention (diffusers' masks, LoRA on) and in the ShadingNet."""

import numpy as np
import pytest
import torch

from fmu.core.manifest.people_layout import auto_boxes
from fmu.core.model.masked_identity import PeopleBatch, PeopleInput, blend_weights, box_masks, ip_adapter_masks
from fmu.core.model.pipeline import Request, Settings

SIZE = 64


@pytest.fixture(scope="module")
def model(weighted_model):
    weighted_model.pipe.set_ip_adapter_scale(0.7)
    return weighted_model


def _ip_tokens(model, ids, clip):
    added = model.identity_inputs(ids, clip, 0.7)
    return model.unet.encoder_hid_proj(added["image_embeds"])


def _attention_inputs(model):
    """Every IP attention module of the UNet with the hidden states it receives in a real forward."""
    from diffusers.models.attention_processor import IPAdapterAttnProcessor2_0

    seen = []
    hooks = [module.register_forward_pre_hook(lambda mod, args, kwargs: seen.append((mod, args[0])), with_kwargs=True)
             for name, module in model.unet.named_modules()
             if name.endswith("attn2") and isinstance(module.processor, IPAdapterAttnProcessor2_0)]
    try:
        torch.manual_seed(0)
        ids, clip = torch.randn(1, 2, 128), torch.randn(1, 2, 17, 32)
        added = model.identity_inputs(ids, clip, 0.7)
        with torch.no_grad():
            model.unet(torch.randn(1, 4, 8, 8), 10, encoder_hidden_states=torch.randn(1, 77, 32),
                       added_cond_kwargs=added)
    finally:
        for h in hooks:
            h.remove()
    assert len(seen) >= 3  # down blocks and the mid block: several resolutions
    return seen


def _left_columns(length: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Token positions of a square attention map in the left / right half (the auto layout)."""
    side = round(length ** 0.5)
    cols = torch.arange(length) % side
    return cols < side // 2, cols >= side // 2


def test_a_persons_identity_attention_ignores_the_other_persons_reference(model):
    """The identity attention output inside A's box does not change when B's reference (ID embedding
    and face crop) changes, and vice versa; without the masks it does (the masks do the work)."""
    masks = [ip_adapter_masks(auto_boxes(2), SIZE, SIZE)]
    text = torch.randn(1, 77, 32)
    torch.manual_seed(3)
    a, b, b2, a2 = (torch.randn(1, 1, 128) for _ in range(4))
    ca, cb, cb2, ca2 = (torch.randn(1, 1, 17, 32) for _ in range(4))
    tokens = {
        "AB": _ip_tokens(model, torch.cat([a, b], 1), torch.cat([ca, cb], 1)),
        "AB'": _ip_tokens(model, torch.cat([a, b2], 1), torch.cat([ca, cb2], 1)),
        "A'B": _ip_tokens(model, torch.cat([a2, b], 1), torch.cat([ca2, cb], 1)),
    }
    for module, hidden in _attention_inputs(model):
        with torch.no_grad():
            out = {k: module(hidden, encoder_hidden_states=(text, v), ip_adapter_masks=masks)[0]
                   for k, v in tokens.items()}
            unmasked = {k: module(hidden, encoder_hidden_states=(text, v))[0] for k, v in tokens.items()}
        left, right = _left_columns(hidden.shape[1])
        assert torch.equal(out["AB"][left], out["AB'"][left])          # B changed: A's box untouched
        assert (out["AB"][right] - out["AB'"][right]).abs().max() > 1e-6
        assert torch.equal(out["AB"][right], out["A'B"][right])        # A changed: B's box untouched
        assert (out["AB"][left] - out["A'B"][left]).abs().max() > 1e-6
        # without masks both identities act everywhere
        assert (unmasked["AB"][left] - unmasked["AB'"][left]).abs().max() > 1e-6


def test_masks_are_diffusers_ip_adapter_masks_of_the_pixel_boxes():
    boxes = [(0.0, 0.0, 0.5, 1.0), (0.25, 0.5, 1.0, 1.0)]
    masks = ip_adapter_masks(boxes, 64, 32)
    assert masks.shape == (1, 2, 32, 64)
    expected = np.zeros((2, 32, 64))
    expected[0, :, :32] = 1
    expected[1, 16:, 16:] = 1
    np.testing.assert_array_equal(masks[0].numpy(), expected)
    np.testing.assert_array_equal(box_masks(boxes, 64, 32) / 255, expected)


def test_blend_weights_split_each_cell_between_the_boxes_and_share_the_background():
    boxes = [(0.0, 0.0, 0.5, 0.5), (0.5, 0.0, 1.0, 0.5)]  # top half: A left, B right; bottom: nobody
    w = blend_weights(boxes, 64, 64, (4, 4))[:, 0, 0]
    np.testing.assert_allclose(w.sum(0).numpy(), np.ones((4, 4)), rtol=0, atol=1e-6)
    np.testing.assert_array_equal(w[0, :2, :2].numpy(), np.ones((2, 2)))   # inside A: only A
    np.testing.assert_array_equal(w[1, :2, :2].numpy(), np.zeros((2, 2)))
    np.testing.assert_array_equal(w[:, 2:].numpy(), np.full((2, 2, 4), 0.5))  # background: the mean
    w2 = blend_weights([(0.0, 0.0, 0.5, 1.0), (0.375, 0.0, 1.0, 1.0)], 64, 64, (1, 4))[:, 0, 0, 0]
    # column 1 (pixels 16..31) is all A's and half B's (B starts at 24): shared by cover
    np.testing.assert_allclose(w2.numpy(), [[1, 1 / 1.5, 0, 0], [0, 0.5 / 1.5, 1, 1]], atol=1e-6)


def _people_request(rng, boxes, seed=5, embeddings=None):
    n = len(boxes)
    conditions = np.zeros((n, SIZE, SIZE), np.uint8)
    for i, m in enumerate(box_masks(boxes, SIZE, SIZE)):
        conditions[i][m > 0] = rng.integers(1, 255, int((m > 0).sum()))
    return Request(prompt="two people", id_embedding=np.zeros(128, np.float32),
                   face_crop=np.zeros((40, 40, 3), np.uint8), seed=seed,
                   condition=conditions.max(0),
                   people=PeopleInput(embeddings=embeddings if embeddings is not None
                                      else rng.normal(size=(n, 128)).astype(np.float32),
                                      crops=[rng.integers(0, 255, (40, 40, 3), dtype=np.uint8) for _ in range(n)],
                                      boxes=tuple(boxes), conditions=conditions))


def test_shading_passes_keep_each_persons_residuals_to_their_box(model):
    """One ShadingNet pass per person: the residuals inside A's box are A's pass alone (B's tokens
    do not reach them), they do depend on A's tokens, and one full-image person is the plain pass."""
    boxes = auto_boxes(2)
    rng = np.random.default_rng(0)
    request = _people_request(rng, boxes)
    batch = PeopleBatch([request], SIZE, SIZE, torch.device("cpu"), torch.float32)
    control = batch.control(do_cfg=False)
    x = torch.randn(1, 4, 8, 8)
    torch.manual_seed(4)
    ta, tb, tb2, ta2 = (torch.randn(1, 4, 32) for _ in range(4))

    def residuals(a, b):
        with torch.no_grad():
            return batch.shading_residuals(model.shading_net, x, 10, torch.cat([a, b], 1), control, 0.5)

    base, other_b, other_a = residuals(ta, tb), residuals(ta, tb2), residuals(ta2, tb)
    moved_by_a = []
    for r0, rb, ra in zip([*base[0], base[1]], [*other_b[0], other_b[1]], [*other_a[0], other_a[1]]):
        inside_a = batch.weights(tuple(r0.shape[-2:]))[0, 0, 0] == 1
        assert inside_a.any()
        assert torch.equal(r0[..., inside_a], rb[..., inside_a])
        moved_by_a.append(bool((r0[..., inside_a] - ra[..., inside_a]).abs().max() > 0))
    # the first residual comes before any cross-attention; from the first attention block on, A's
    # tokens shape A's box
    assert not moved_by_a[0] and all(moved_by_a[-3:])
    # one person whose box is the whole image: exactly the ShadingNet's own residuals
    whole = _people_request(rng, [(0.0, 0.0, 1.0, 1.0)])
    single = PeopleBatch([whole], SIZE, SIZE, torch.device("cpu"), torch.float32)
    cond = single.control(do_cfg=False)
    with torch.no_grad():
        ours = single.shading_residuals(model.shading_net, x, 10, ta, cond, 0.5)
        plain = model.shading_net(x, 10, encoder_hidden_states=ta, controlnet_cond=cond[0], conditioning_scale=0.5,
                                  return_dict=False)
    for a, b in zip([*ours[0], ours[1]], [*plain[0], plain[1]]):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_two_people_generate_with_lora_each_identity_in_its_box(model):
    """The sampling loop with two people: LoRA scale and identity masks travel together; swapping
    the people swaps what acts where (the image changes), the same inputs give the same image."""
    rng = np.random.default_rng(1)
    boxes = auto_boxes(2)
    request = _people_request(rng, boxes)
    settings = Settings(steps=2, guidance_scale=5.0, width=SIZE, height=SIZE)
    first = model.generate([request], settings)[0]
    again = model.generate([request], settings)[0]
    np.testing.assert_array_equal(first, again)
    p = request.people
    swapped = Request(**{**request.__dict__, "people": PeopleInput(p.embeddings[::-1].copy(), p.crops[::-1],
                                                                    p.boxes, p.conditions)})
    assert np.abs(model.generate([swapped], settings)[0].astype(int) - first.astype(int)).max() > 0
    no_lora = model.generate([request], Settings(**{**settings.__dict__, "id_lora_scale": 0.0}))[0]
    assert np.abs(no_lora.astype(int) - first.astype(int)).max() > 0
    with pytest.raises(ValueError, match="mixes"):
        model.generate([request, Request(prompt="x", id_embedding=np.zeros(128, np.float32),
                                         face_crop=np.zeros((40, 40, 3), np.uint8), seed=1)], settings)
