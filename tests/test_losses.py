"""The losses against straightforward loop computations on hand-made tensors."""

import math

import numpy as np
import pytest
import torch
from diffusers import DDPMScheduler

from fmu.training.losses import (
    attention_map_loss,
    identity_loss,
    identity_loss_weights,
    predict_x0,
    total_attention_map_loss,
)


def bilinear_resize_reference(mask: np.ndarray, out: int) -> np.ndarray:
    """Half-pixel-centre bilinear resize, written out (what F.interpolate does, align_corners=False)."""
    h, w = mask.shape
    result = np.zeros((out, out))
    for y in range(out):
        for x in range(out):
            sy = max((y + 0.5) * h / out - 0.5, 0.0)
            sx = max((x + 0.5) * w / out - 0.5, 0.0)
            y0, x0 = int(math.floor(sy)), int(math.floor(sx))
            y1, x1 = min(y0 + 1, h - 1), min(x0 + 1, w - 1)
            fy, fx = sy - y0, sx - x0
            result[y, x] = (
                mask[y0, x0] * (1 - fy) * (1 - fx) + mask[y0, x1] * (1 - fy) * fx
                + mask[y1, x0] * fy * (1 - fx) + mask[y1, x1] * fy * fx
            )
    return result


def map_loss_reference(probs, masks, token_indices):
    probs = probs.detach().double().numpy()
    batch = len(masks)
    heads = probs.shape[0] // batch
    side = int(round(math.sqrt(probs.shape[1])))
    pairs = []
    for b in range(batch):
        for mask, tokens in zip(masks[b], token_indices[b]):
            if not tokens:
                continue
            target = bilinear_resize_reference(mask[0].double().numpy(), side) > 0.5
            head_values = []
            for h in range(heads):
                row = b * heads + h
                total = 0.0
                for c in list(tokens) + ["mean"]:
                    for y in range(side):
                        for x in range(side):
                            if c == "mean":
                                a = sum(probs[row, y * side + x, t] for t in tokens) / len(tokens)
                            else:
                                a = probs[row, y * side + x, c]
                            total += (a - float(target[y, x])) ** 2
                head_values.append(total / (side * side * (len(tokens) + 1)))
            pairs.append(sum(head_values) / heads)
    return sum(pairs) / len(pairs) if pairs else 0.0


def hand_made_batch(seed=0):
    g = torch.Generator().manual_seed(seed)
    batch, heads, side, text_len = 2, 3, 4, 6
    probs = torch.randn(batch * heads, side * side, text_len, generator=g).softmax(-1)
    masks = [
        [torch.rand(1, 8, 8, generator=g), (torch.rand(1, 8, 8, generator=g) > 0.5).float()],
        [torch.rand(1, 4, 4, generator=g), torch.rand(1, 2, 2, generator=g), torch.rand(1, 5, 3, generator=g)],
    ]
    tokens = [[[1, 2], [4]], [[], [0, 5, 3], [2]]]
    return probs, masks, tokens


def test_attention_map_loss_matches_loop_reference():
    probs, masks, tokens = hand_made_batch()
    value = attention_map_loss(probs, masks, tokens)
    assert value.ndim == 0
    assert value.item() == pytest.approx(map_loss_reference(probs, masks, tokens), abs=1e-6)


def test_attention_map_loss_is_zero_for_maps_equal_to_the_mask():
    side = 4
    mask = torch.zeros(1, 8, 8)
    mask[:, :4, 2:6] = 1.0                      # a block that survives the 8→4 resize exactly
    binary = torch.zeros(side * side)
    binary.view(side, side)[:2, 1:3] = 1.0
    probs = torch.rand(2, side * side, 5)       # one sample, two heads
    probs[:, :, 1] = binary
    probs[:, :, 3] = binary
    assert attention_map_loss(probs, [[mask]], [[[1, 3]]]).item() == pytest.approx(0.0, abs=1e-7)
    assert attention_map_loss(probs, [[mask]], [[[1, 2]]]).item() > 0.01


def test_attention_map_loss_without_pairs_is_zero():
    probs, masks, _ = hand_made_batch()
    only_empty = [[[], []], [[], [], []]]
    assert attention_map_loss(probs, masks, only_empty).item() == 0.0
    assert attention_map_loss(probs, [[], []], [[], []]).item() == 0.0
    assert attention_map_loss(probs, [], []).item() == 0.0


def test_attention_map_loss_skips_only_the_empty_pair():
    probs, masks, tokens = hand_made_batch()
    without_empty = [masks[0], masks[1][1:]]
    tokens_without_empty = [tokens[0], tokens[1][1:]]
    assert attention_map_loss(probs, masks, tokens).item() == pytest.approx(
        attention_map_loss(probs, without_empty, tokens_without_empty).item(), abs=1e-7
    )


def test_attention_map_loss_gradient_reaches_only_the_used_tokens():
    probs, masks, tokens = hand_made_batch()
    probs.requires_grad_(True)
    attention_map_loss(probs, masks, tokens).backward()
    heads = 3
    used = {0: {1, 2, 4}, 1: {0, 5, 3, 2}}
    for b in range(2):
        rows = probs.grad[b * heads:(b + 1) * heads]
        for token in range(probs.shape[-1]):
            norm = rows[:, :, token].abs().sum().item()
            assert (norm > 0) == (token in used[b]), (b, token)


def test_total_attention_map_loss_sums_finite_layers_and_skips_nan_inf():
    a = torch.tensor(1.5, requires_grad=True)
    b = torch.tensor(2.25, requires_grad=True)
    layers = [a, torch.tensor(float("nan")), b * 1.0, torch.tensor(float("inf"))]
    total = total_attention_map_loss(layers)
    assert total.item() == pytest.approx(3.75)
    total.backward()
    assert a.grad.item() == 1.0 and b.grad.item() == 1.0
    assert total_attention_map_loss([torch.tensor(float("nan"))]).item() == 0.0
    assert total_attention_map_loss([]).item() == 0.0


def test_identity_loss_matches_loop_reference_with_and_without_weights():
    g = torch.Generator().manual_seed(1)
    ref = torch.randn(4, 16, generator=g)
    gen = torch.randn(4, 16, generator=g, requires_grad=True)
    weights = torch.tensor([0.0, 0.5, 0.5, 2.0])

    def reference(w):
        terms = []
        for i in range(4):
            r, q = ref[i].tolist(), gen[i].tolist()
            cos = sum(x * y for x, y in zip(r, q)) / (
                math.sqrt(sum(x * x for x in r)) * math.sqrt(sum(y * y for y in q))
            )
            terms.append(w[i] * (1 - cos))
        return sum(terms) / 4

    assert identity_loss(ref, gen).item() == pytest.approx(reference([1, 1, 1, 1]), abs=1e-6)
    value = identity_loss(ref, gen, weights)
    assert value.item() == pytest.approx(reference(weights.tolist()), abs=1e-6)
    value.backward()
    assert gen.grad[0].abs().sum().item() == 0.0          # weight 0: no gradient
    assert gen.grad[3].abs().sum().item() > 0.0


def test_identity_loss_extremes():
    e = torch.nn.functional.normalize(torch.randn(3, 8), dim=-1)
    assert identity_loss(e, e * 3.0).item() == pytest.approx(0.0, abs=1e-6)
    assert identity_loss(e, -e).item() == pytest.approx(2.0, abs=1e-6)


def test_identity_loss_weights_apply_inside_the_inclusive_range():
    t = torch.tensor([0, 99, 100, 500, 501, 999])
    weights = identity_loss_weights(t, t_min=100, t_max=500, lambda_id=0.3)
    assert weights.tolist() == pytest.approx([0, 0, 0.3, 0.3, 0, 0])


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
def test_predict_x0_inverts_add_noise_and_matches_scheduler_step(prediction_type):
    scheduler = DDPMScheduler(
        num_train_timesteps=1000, beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012,
        clip_sample=False, prediction_type=prediction_type,
    )
    g = torch.Generator().manual_seed(2)
    x0 = torch.randn(3, 4, 8, 8, generator=g)
    noise = torch.randn(3, 4, 8, 8, generator=g)
    t = torch.tensor([10, 400, 900])
    x_t = scheduler.add_noise(x0, noise, t)
    target = noise if prediction_type == "epsilon" else scheduler.get_velocity(x0, noise, t)
    assert torch.allclose(predict_x0(target, x_t, t, scheduler), x0, atol=1e-4)

    model_out = torch.randn(3, 4, 8, 8, generator=g)
    ours = predict_x0(model_out, x_t, t, scheduler)
    for i in range(3):
        step = scheduler.step(model_out[i:i + 1], int(t[i]), x_t[i:i + 1])
        assert torch.allclose(ours[i:i + 1], step.pred_original_sample, atol=1e-5)


def test_predict_x0_refuses_sample_prediction():
    scheduler = DDPMScheduler(prediction_type="sample")
    with pytest.raises(ValueError):
        predict_x0(torch.zeros(1, 4, 2, 2), torch.zeros(1, 4, 2, 2), torch.tensor([5]), scheduler)
