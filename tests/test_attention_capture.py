"""Attention capture on a tiny SD-architecture UNet with IP-Adapter FaceID-Plus and peft LoRA."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest
import torch
from diffusers import UNet2DConditionModel
from diffusers.models.attention_processor import Attention, IPAdapterAttnProcessor2_0
from peft import LoraConfig

from fmu.training.attention_capture import (
    CapturingIPAdapterAttnProcessor,
    install_attention_capture,
    remove_attention_capture,
)
from fmu.training.losses import attention_map_loss, total_attention_map_loss

CROSS_DIM, ID_DIM, CLIP_DIM, CLIP_SEQ, TEXT_LEN, LATENT = 32, 16, 24, 5, 7, 16
MAP_SIZE = LATENT // 2
CAPTURED = {  # cross-attention layers working at LATENT / 2 in a two-block UNet
    "down_blocks.1.attentions.0.transformer_blocks.0.attn2",
    "mid_block.attentions.0.transformer_blocks.0.attn2",
    "up_blocks.0.attentions.0.transformer_blocks.0.attn2",
    "up_blocks.0.attentions.1.transformer_blocks.0.attn2",
}


def tiny_unet(seed=0) -> UNet2DConditionModel:
    torch.manual_seed(seed)
    return UNet2DConditionModel(
        sample_size=LATENT, in_channels=4, out_channels=4, layers_per_block=1,
        block_out_channels=(32, 64), norm_num_groups=8, attention_head_dim=8,
        cross_attention_dim=CROSS_DIM,
        down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
    )


def random_faceid_plus_state_dict(unet, seed=1) -> dict:
    """A FaceID-Plus checkpoint in the original IP-Adapter layout (ProjPlusModel + to_k_ip/to_v_ip)."""
    g = torch.Generator().manual_seed(seed)

    def rand(*shape):
        return torch.randn(*shape, generator=g) * 0.2

    inner = 64  # the loader assumes dim_head 64: heads = to_q.out // 64
    image_proj = {
        "proj.0.weight": rand(2 * ID_DIM, ID_DIM), "proj.0.bias": rand(2 * ID_DIM),
        "proj.2.weight": rand(4 * CROSS_DIM, 2 * ID_DIM), "proj.2.bias": rand(4 * CROSS_DIM),
        "norm.weight": 1 + rand(CROSS_DIM), "norm.bias": rand(CROSS_DIM),
        "perceiver_resampler.proj_in.weight": rand(CROSS_DIM, CLIP_DIM),
        "perceiver_resampler.proj_in.bias": rand(CROSS_DIM),
        "perceiver_resampler.proj_out.weight": rand(CROSS_DIM, CROSS_DIM),
        "perceiver_resampler.proj_out.bias": rand(CROSS_DIM),
        "perceiver_resampler.norm_out.weight": 1 + rand(CROSS_DIM),
        "perceiver_resampler.norm_out.bias": rand(CROSS_DIM),
    }
    for i in range(4):
        p = f"perceiver_resampler.layers.{i}."
        image_proj |= {
            p + "0.norm1.weight": 1 + rand(CROSS_DIM), p + "0.norm1.bias": rand(CROSS_DIM),
            p + "0.norm2.weight": 1 + rand(CROSS_DIM), p + "0.norm2.bias": rand(CROSS_DIM),
            p + "0.to_q.weight": rand(inner, CROSS_DIM), p + "0.to_kv.weight": rand(2 * inner, CROSS_DIM),
            p + "0.to_out.weight": rand(CROSS_DIM, inner),
            p + "1.0.weight": 1 + rand(CROSS_DIM), p + "1.0.bias": rand(CROSS_DIM),
            p + "1.1.weight": rand(4 * CROSS_DIM, CROSS_DIM), p + "1.3.weight": rand(CROSS_DIM, 4 * CROSS_DIM),
        }
    ip_adapter, key_id = {}, 1
    for name in unet.attn_processors:
        if name.endswith("attn2.processor"):
            hidden = unet.get_submodule(name.rsplit(".", 1)[0]).to_q.out_features
            ip_adapter[f"{key_id}.to_k_ip.weight"] = rand(hidden, CROSS_DIM)
            ip_adapter[f"{key_id}.to_v_ip.weight"] = rand(hidden, CROSS_DIM)
            key_id += 2
    return {"image_proj": image_proj, "ip_adapter": ip_adapter}


def model_with_ip_and_lora():
    unet = tiny_unet()
    unet._load_ip_adapter_weights([random_faceid_plus_state_dict(unet)])
    # LoRA on the UNet's attention only (a bare "to_q" would also hit the image projection's
    # resampler), and add_adapter freezes everything else: the IP parts are trained too.
    targets = r"(down_blocks|mid_block|up_blocks).*attn[12]\.(to_q|to_k|to_v|to_out\.0)"
    unet.add_adapter(LoraConfig(r=4, lora_alpha=4, target_modules=targets))
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():  # LoRA B starts at zero: make LoRA actually change the model
        for name, param in unet.named_parameters():
            if "lora_B" in name:
                param.copy_(torch.randn(param.shape, generator=g) * 0.1)
            if "to_k_ip" in name or "to_v_ip" in name or name.startswith("encoder_hid_proj"):
                param.requires_grad_(True)
    return unet.eval()


def inputs(batch=2, seed=4):
    g = torch.Generator().manual_seed(seed)
    return {
        "sample": torch.randn(batch, 4, LATENT, LATENT, generator=g),
        "timestep": torch.tensor([10, 500][:batch]),
        "encoder_hidden_states": torch.randn(batch, TEXT_LEN, CROSS_DIM, generator=g),
        "clip_embeds": torch.randn(batch, 1, CLIP_SEQ, CLIP_DIM, generator=g),
        "id_embeds": torch.randn(batch, 1, ID_DIM, generator=g),
    }


def run(unet, x):
    unet.encoder_hid_proj.image_projection_layers[0].clip_embeds = x["clip_embeds"]
    return unet(x["sample"], x["timestep"], encoder_hidden_states=x["encoder_hidden_states"],
                added_cond_kwargs={"image_embeds": [x["id_embeds"]]}).sample


@pytest.fixture(scope="module")
def unet():
    return model_with_ip_and_lora()


def test_capture_changes_neither_output_nor_parameters(unet):
    x = inputs()
    keys_before = list(unet.state_dict())
    params_before = [id(p) for p in unet.parameters()]
    with torch.no_grad():
        reference = run(unet, x)
        store = install_attention_capture(unet, MAP_SIZE)
        try:
            captured = run(unet, x)
            assert list(unet.state_dict()) == keys_before
            assert [id(p) for p in unet.parameters()] == params_before
        finally:
            remove_attention_capture(unet)
        after = run(unet, x)
    assert store.maps
    assert (captured - reference).abs().max().item() <= 1e-5
    assert torch.equal(after, reference)


def test_remove_restores_the_very_same_processors(unet):
    before = dict(unet.attn_processors)
    store = install_attention_capture(unet, MAP_SIZE)
    swapped = {n for n, p in unet.attn_processors.items() if isinstance(p, CapturingIPAdapterAttnProcessor)}
    assert swapped == {f"{name}.processor" for name in CAPTURED} == {f"{n}.processor" for n in store.layers}
    with pytest.raises(RuntimeError):
        install_attention_capture(unet, MAP_SIZE)
    remove_attention_capture(unet)
    after = unet.attn_processors
    assert after.keys() == before.keys()
    assert all(after[name] is before[name] for name in before)


def test_ip_scale_set_while_installed_reaches_the_original(unet):
    install_attention_capture(unet, MAP_SIZE)
    name = sorted(CAPTURED)[0]
    capturing = unet.get_submodule(name).processor
    capturing.scale = [0.25]
    remove_attention_capture(unet)
    original = unet.get_submodule(name).processor
    assert type(original) is IPAdapterAttnProcessor2_0 and original.scale == [0.25]
    original.scale = [1.0]


def test_captured_maps_are_the_text_softmax_at_the_map_resolution(unet):
    x = inputs()
    layer_inputs = {}
    watched = sorted(CAPTURED)[-1]
    attn: Attention = unet.get_submodule(watched)

    def keep(module, args, kwargs):
        layer_inputs["hidden"] = args[0] if args else kwargs["hidden_states"]
        layer_inputs["context"] = kwargs["encoder_hidden_states"][0]  # (text, [ip tokens])

    handle = attn.register_forward_pre_hook(keep, with_kwargs=True)
    store = install_attention_capture(unet, MAP_SIZE)
    try:
        with torch.no_grad():
            run(unet, x)
    finally:
        handle.remove()
        remove_attention_capture(unet)
    assert set(store.maps) == CAPTURED
    for name, probs in store.maps.items():
        heads = unet.get_submodule(name).heads
        assert probs.shape == (2 * heads, MAP_SIZE * MAP_SIZE, TEXT_LEN)
        assert torch.allclose(probs.sum(-1), torch.ones(()), atol=1e-5)
    # Independent recomputation for one layer: softmax(q kᵀ / √d) per head, batch-major rows.
    with torch.no_grad():
        q = attn.to_q(layer_inputs["hidden"])
        k = attn.to_k(layer_inputs["context"])
    heads, d = attn.heads, q.shape[-1] // attn.heads
    expected = torch.empty(2 * heads, q.shape[1], TEXT_LEN)
    for b in range(2):
        for h in range(heads):
            qh, kh = q[b, :, h * d:(h + 1) * d], k[b, :, h * d:(h + 1) * d]
            expected[b * heads + h] = torch.softmax(qh @ kh.T / d**0.5, dim=-1)
    assert torch.allclose(store.maps[watched], expected, atol=1e-5)


def test_map_loss_gradient_reaches_ip_and_lora_parameters(unet):
    x = inputs()
    masks = [[torch.ones(1, 32, 32) * torch.arange(32).view(1, 1, 32).ge(16)], [torch.rand(1, 32, 32)]]
    tokens = [[[1, 2]], [[4]]]
    store = install_attention_capture(unet, MAP_SIZE)
    try:
        unet.zero_grad(set_to_none=True)
        run(unet, x)
        per_layer = [attention_map_loss(p, masks, tokens) for p in store.values()]
        total_attention_map_loss(per_layer).backward()
    finally:
        remove_attention_capture(unet)
        store.clear()
    grads = {n: p.grad for n, p in unet.named_parameters()}

    def norm(fragment):
        found = [g for n, g in grads.items() if fragment in n]
        assert found, fragment
        return sum(0.0 if g is None else g.abs().sum().item() for g in found)

    last = "up_blocks.0.attentions.1.transformer_blocks.0.attn2"
    assert norm(f"{last}.to_q.lora_B") > 0 and norm(f"{last}.to_k.lora_B") > 0
    assert norm("down_blocks.0.attentions.0.transformer_blocks.0.attn2.processor.to_k_ip") > 0
    assert norm("encoder_hid_proj.image_projection_layers.0.proj") > 0
    # Layers after the last captured one cannot influence the maps.
    assert norm("up_blocks.1.attentions.1.transformer_blocks.0.attn2.processor.to_v_ip") == 0
    assert norm(f"{last}.to_v.lora_B") == 0


def test_plain_unet_without_ip_adapter_is_captured_too():
    unet = tiny_unet().eval()
    x = inputs()
    with torch.no_grad():
        reference = unet(x["sample"], x["timestep"], x["encoder_hidden_states"]).sample
        store = install_attention_capture(unet, MAP_SIZE)
        captured = unet(x["sample"], x["timestep"], x["encoder_hidden_states"]).sample
        remove_attention_capture(unet)
    assert torch.allclose(captured, reference, atol=1e-6)
    assert set(store.maps) == CAPTURED


def test_a_map_size_no_layer_has_is_refused(unet):
    with pytest.raises(ValueError):
        install_attention_capture(unet, map_size=3)


def test_sd15_block_layout_captures_down_blocks_1_and_up_blocks_2():
    # SD1.5's four-block layout with tiny widths: latent 64 (512 px) → 32×32 maps.
    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        sample_size=64, layers_per_block=2, block_out_channels=(8, 8, 16, 16), norm_num_groups=4,
        attention_head_dim=2, cross_attention_dim=8,
    ).eval()
    store = install_attention_capture(unet, map_size=32)
    with torch.no_grad():
        unet(torch.randn(1, 4, 64, 64), 5, torch.randn(1, 3, 8))
    remove_attention_capture(unet)
    expected = [f"down_blocks.1.attentions.{i}.transformer_blocks.0.attn2" for i in range(2)] + [
        f"up_blocks.2.attentions.{i}.transformer_blocks.0.attn2" for i in range(3)]
    assert store.layers == expected
    assert [tuple(m.shape) for m in store.values()] == [(2, 32 * 32, 3)] * 5
