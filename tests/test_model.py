"""The identity channel and ShadingNet are real: they change the prediction, switch off
exactly, and survive save/load."""

import numpy as np
import pytest
import torch

from fmu.core.errors import UsageError
from fmu.core.model import adapter as A
from fmu.core.model.facemakeup import FaceMakeUp
from fmu.core.model.pipeline import DEFAULT_NEGATIVE, Request, Settings

SIZE = 64


@pytest.fixture(scope="module")
def model(weighted_model):
    return weighted_model


def _requests(n=2, seed=5, condition=True):
    rng, cond_rng = np.random.default_rng(0), np.random.default_rng(1)
    return [Request(prompt="a portrait photo of a woman", seed=seed + i,
                    id_embedding=rng.normal(size=128).astype(np.float32),
                    face_crop=rng.integers(0, 255, (40, 40, 3), dtype=np.uint8),
                    condition=(cond_rng.random((SIZE, SIZE)) * 255).astype(np.uint8) if condition else None)
            for i in range(n)]


def _unet_pred(model, ids, clip, down=None, mid=None):
    unet = model.unet
    proj = A.image_projection(unet)
    proj.clip_embeds, proj.shortcut, proj.shortcut_scale = clip, True, 0.7
    torch.manual_seed(0)
    x = torch.randn(1, 4, 8, 8)
    text = torch.randn(1, 77, 32)
    with torch.no_grad():
        return unet(x, 10, encoder_hidden_states=text, added_cond_kwargs={"image_embeds": [ids]},
                    down_block_additional_residuals=down, mid_block_additional_residual=mid).sample


def test_id_tokens_change_the_unet_prediction(model):
    model.pipe.set_ip_adapter_scale(0.5)
    clip = torch.randn(1, 1, 17, 32)
    a = _unet_pred(model, torch.randn(1, 1, 128), clip)
    b = _unet_pred(model, torch.randn(1, 1, 128), clip)
    assert (a - b).abs().max() > 1e-4
    model.pipe.set_ip_adapter_scale(0.0)
    c = _unet_pred(model, torch.randn(1, 1, 128), clip)
    d = _unet_pred(model, torch.randn(1, 1, 128), clip)
    assert torch.equal(c, d)  # scale 0: the ID tokens are not attended to at all


def test_id_scale_zero_reproduces_the_base_pipeline_exactly(model, tiny_preset):
    from diffusers import DDIMScheduler, StableDiffusionPipeline

    base, _ = tiny_preset
    pipe = StableDiffusionPipeline.from_pretrained(base, safety_checker=None, requires_safety_checker=False)
    pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config)
    pipe.set_progress_bar_config(disable=True)
    settings = Settings(steps=4, guidance_scale=7.5, id_scale=0.0, width=SIZE, height=SIZE)
    reqs = _requests(condition=False)
    ours = model.generate(reqs, settings)
    ref = pipe([r.prompt for r in reqs], negative_prompt=[DEFAULT_NEGATIVE] * 2, num_inference_steps=4,
               guidance_scale=7.5, height=SIZE, width=SIZE, output_type="np",
               generator=[torch.Generator().manual_seed(r.seed) for r in reqs]).images
    ref = [(np.clip(im, 0, 1) * 255).round().astype(np.uint8) for im in ref]
    for a, b in zip(ours, ref):
        np.testing.assert_array_equal(a, b)
    on = model.generate(reqs, Settings(steps=4, id_scale=0.5, width=SIZE, height=SIZE, shading_scale=0))
    assert any(np.abs(a.astype(int) - b.astype(int)).max() > 0 for a, b in zip(on, ref))


def test_shading_net_changes_the_prediction_and_scale_zero_is_a_no_op(model):
    reqs = _requests()
    with_shading = model.generate(reqs, Settings(steps=3, width=SIZE, height=SIZE, shading_scale=0.5))
    off = model.generate(reqs, Settings(steps=3, width=SIZE, height=SIZE, shading_scale=0.0))
    no_cond = model.generate(_requests(condition=False), Settings(steps=3, width=SIZE, height=SIZE))
    assert any(not np.array_equal(a, b) for a, b in zip(with_shading, off))
    for a, b in zip(off, no_cond):
        np.testing.assert_array_equal(a, b)
    # the ShadingNet cross-attends to the ID tokens: other identities, other residuals
    net = model.shading_net
    x, cond = torch.randn(1, 4, 8, 8), torch.rand(1, 3, SIZE, SIZE)
    with torch.no_grad():
        r1 = net(x, 10, encoder_hidden_states=torch.randn(1, 4, 32), controlnet_cond=cond, return_dict=False)
        r2 = net(x, 10, encoder_hidden_states=torch.randn(1, 4, 32), controlnet_cond=cond, return_dict=False)
    assert (r1[1] - r2[1]).abs().max() > 0


def test_saved_adapter_reloads_to_identical_outputs(model, tiny_preset, tmp_path):
    base, _ = tiny_preset
    with torch.no_grad():  # make every saved group non-trivial
        for p in A.image_projection(model.unet).parameters():
            p.add_(torch.randn_like(p) * 0.01)
        for p in model.shading_net.parameters():
            p.add_(torch.randn_like(p) * 0.01)
    path = tmp_path / "adapter.safetensors"
    model.save_pretrained(path)
    again = FaceMakeUp.from_pretrained(base, path)
    settings = Settings(steps=3, width=SIZE, height=SIZE)
    for a, b in zip(model.generate(_requests(), settings), again.generate(_requests(), settings)):
        np.testing.assert_array_equal(a, b)
    tensors, _ = A.read_adapter(path)
    assert {k.split(".")[0] for k in tensors} == {"image_proj", "ip_attn", "lora", "shading"}


def test_adapter_reader_refuses_foreign_files(tmp_path):
    from safetensors.torch import save_file

    path = tmp_path / "other.safetensors"
    save_file({"x": torch.zeros(2)}, str(path))
    with pytest.raises(UsageError, match="not an fmu adapter"):
        A.read_adapter(path)


def test_prompt_prefix_follows_the_authors_demo():
    from fmu.core.model.settings import with_prefix

    assert with_prefix("red lipstick") == "best quality red lipstick"
    assert with_prefix("best quality, red lipstick") == "best quality, red lipstick"  # not doubled
    assert with_prefix("red lipstick", "") == "red lipstick"
