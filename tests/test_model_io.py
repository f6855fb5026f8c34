"""FaceMakeUp's load/save API and LoRA files.

What `save_pretrained` writes, `from_pretrained` (and `load_adapter_weights`) reads back to the
same tensors and the same ε prediction; a fresh model is the IP-Adapter initialisation; LoRA
files round-trip, and a file in the fmu-lora/1 layout written before core/model/lora.py existed
still applies — checked against an independent merge of its weights into the UNet.
"""

import hashlib
import json
import re
from dataclasses import asdict

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from fmu.core.errors import UsageError
from fmu.core.model import adapter as A
from fmu.core.model import lora as L
from fmu.core.model.facemakeup import FaceMakeUp

# the target pattern and metadata keys `fmu finetune` wrote before lora.py (training/lora_apply.py)
OLD_TARGETS = r".*(down_blocks|mid_block|up_blocks)\..*attn[12]\.(to_q|to_k|to_v|to_out\.0)"


def _plain_unet(base):
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel.from_pretrained(base, subfolder="unet")


def _inputs():
    g = torch.Generator().manual_seed(7)
    return dict(latents=torch.randn(2, 4, 8, 8, generator=g), text=torch.randn(2, 77, 32, generator=g),
                ids=torch.randn(2, 128, generator=g), clip=torch.randn(2, 17, 32, generator=g),
                control=torch.rand(2, 3, 64, 64, generator=g))


@torch.no_grad()
def _eps(model, inp):
    model.pipe.set_ip_adapter_scale(0.5)
    added = model.identity_inputs(inp["ids"], inp["clip"], 0.7)
    return model.predict_noise(inp["latents"], 10, inp["text"], added, inp["control"], 0.5)


def _perturb(model, seed):
    """Give every adapter part weight (the preset's LoRA B and zero-convs start at zero)."""
    g = torch.Generator().manual_seed(seed)
    params = [p for n, p in model.unet.named_parameters()
              if n.startswith("encoder_hid_proj.") or "_ip." in n or "lora_" in n]
    params += list(model.shading_net.parameters())
    with torch.no_grad():
        for p in params:
            p.add_(torch.randn(p.shape, generator=g) * 0.05)


def _states_equal(a, b) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_save_pretrained_reloads_to_identical_tensors_and_prediction(tiny_preset, tmp_path):
    base, adapter = tiny_preset
    model = FaceMakeUp.from_pretrained(base, adapter)
    _perturb(model, 0)
    path = model.save_pretrained(tmp_path / "out", extra_meta={"note": "round trip"})
    assert path == tmp_path / "out" / "adapter.safetensors"

    again = FaceMakeUp.from_pretrained(base, path)
    assert again.cfg == model.cfg
    assert _states_equal(model.unet, again.unet) and _states_equal(model.shading_net, again.shading_net)
    inp = _inputs()
    assert torch.equal(_eps(model, inp), _eps(again, inp))

    # the file: four parts, the identity LoRA as peft holds it, config and extra metadata
    from peft.utils import get_peft_model_state_dict

    with safe_open(str(path), framework="pt") as fh:
        meta, tensors = fh.metadata(), {k: fh.get_tensor(k) for k in fh.keys()}  # noqa: SIM118  safe_open is no dict
    assert {k.split(".")[0] for k in tensors} == {"image_proj", "ip_attn", "lora", "shading"}
    peft_lora = get_peft_model_state_dict(model.unet, adapter_name="fmu_id")
    assert {k[len("lora."):] for k in tensors if k.startswith("lora.")} == set(peft_lora)
    assert all(torch.equal(tensors["lora." + k], v) for k, v in peft_lora.items())
    assert meta["format"] == "fmu-adapter/1" and json.loads(meta["config"]) == asdict(model.cfg)
    assert json.loads(meta["note"]) == "round trip"

    # in place (resuming training): another model takes the saved weights over
    other = FaceMakeUp.from_pretrained(base, adapter)
    assert not torch.equal(_eps(other, inp), _eps(model, inp))
    other.load_adapter_weights(path)
    assert _states_equal(model.unet, other.unet) and _states_equal(model.shading_net, other.shading_net)
    assert torch.equal(_eps(other, inp), _eps(model, inp))


def test_save_pretrained_to_a_file_path_and_foreign_files_refused(tiny_preset, tmp_path):
    base, adapter = tiny_preset
    model = FaceMakeUp.from_pretrained(base, adapter)
    path = model.save_pretrained(tmp_path / "named.safetensors")
    assert path == tmp_path / "named.safetensors" and path.is_file()
    foreign = tmp_path / "other.safetensors"
    save_file({"x": torch.zeros(2)}, str(foreign))
    with pytest.raises(UsageError, match="not an fmu adapter"):
        model.load_adapter_weights(foreign)


def test_from_base_is_a_fresh_ip_adapter_on_the_plain_unet(tiny_preset):
    base, _ = tiny_preset
    model = FaceMakeUp.from_base(base, id_embed_dim=128, lora_rank=4)
    # the sizes the base dictates: CLIP width 32, cross-attention 32, one 64-wide head at least
    assert model.cfg == A.AdapterConfig(id_embed_dim=128, clip_hidden_dim=32, embed_dims=32,
                                        perceiver_heads=1, lora_rank=4)
    plain = _plain_unet(base)
    modules = dict(plain.named_modules())
    ip = {name: proc for name, proc in model.unet.attn_processors.items() if hasattr(proc, "to_k_ip")}
    assert ip and len(ip) == sum(name.endswith("attn2.processor") for name in plain.attn_processors)
    for name, proc in ip.items():  # IP-Adapter init: the ID key/value projections copy to_k / to_v
        attn = modules[name[: -len(".processor")]]
        assert torch.equal(proc.to_k_ip[0].weight, attn.to_k.weight)
        assert torch.equal(proc.to_v_ip[0].weight, attn.to_v.weight)
    assert model.unet.peft_config["fmu_id"].r == 4
    assert torch.equal(model.shading_net.conv_in.weight, plain.conv_in.weight)  # ControlNet.from_unet
    # untrained: LoRA B = 0 and the ID attention off reproduce the plain UNet exactly
    inp = _inputs()
    model.pipe.set_ip_adapter_scale(0.0)
    with torch.no_grad():
        added = model.identity_inputs(inp["ids"], inp["clip"], 1.0)
        ours = model.unet(inp["latents"], 10, encoder_hidden_states=inp["text"], added_cond_kwargs=added).sample
        ref = plain(inp["latents"], 10, encoder_hidden_states=inp["text"]).sample
    assert torch.equal(ours, ref)


def test_lora_file_write_read_apply_round_trip(tiny_preset, tmp_path):
    base, adapter = tiny_preset
    model = FaceMakeUp.from_pretrained(base, adapter)
    L.add_lora(model.unet, 2, name=L.FINETUNE_ADAPTER)
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for name, p in model.unet.named_parameters():
            if "lora_B.fmu_ft" in name:
                p.copy_(torch.randn(p.shape, generator=g) * 0.1)
    state = L.lora_state(model.unet, L.FINETUNE_ADAPTER)
    path = tmp_path / "ft.safetensors"
    model.save_lora_weights(path, extra_meta={"steps": 3})

    tensors, meta = L.read_lora_file(path)
    assert tensors.keys() == state.keys() and all(torch.equal(tensors[k], state[k]) for k in state)
    # the adapter it rides on is named by the sha256 of its file (tests/test_lora_identity.py)
    adapter_digest = json.dumps(hashlib.sha256(adapter.read_bytes()).hexdigest())
    assert meta == {"format": "fmu-lora/1", "rank": "2", "alpha": "2", "target_modules": OLD_TARGETS, "steps": "3",
                    "adapter_sha256": adapter_digest}
    assert L.lora_file_meta(path) == meta

    other = FaceMakeUp.from_pretrained(base, adapter)
    inp = _inputs()
    plain = _eps(other, inp)
    other.load_lora_weights(path)
    applied = L.lora_state(other.unet, L.FINETUNE_ADAPTER)
    assert applied.keys() == state.keys() and all(torch.equal(applied[k], state[k]) for k in state)
    assert list(other.unet.peft_config) == ["fmu_id", "fmu_ft"]
    with_lora = _eps(other, inp)
    assert torch.equal(with_lora, _eps(model, inp)) and not torch.equal(with_lora, plain)
    with pytest.raises(ValueError, match="already applied"):
        other.load_lora_weights(path)
    with pytest.raises(UsageError, match="not an fmu LoRA file"):
        L.read_lora_file(adapter)


def test_a_lora_file_written_in_the_old_layout_still_applies(tiny_preset, tmp_path):
    """peft-layout tensors + the fmu-lora/1 header keys rank / alpha / target_modules, as
    training/lora_apply.py wrote them: applied with weight s, the UNet predicts what the plain
    one predicts with W + s·(alpha/rank)·B·A merged into every target layer."""
    base, adapter = tiny_preset
    rank, alpha, scale = 2, 4, 0.5
    pattern = re.compile(OLD_TARGETS)
    linears = {n: m for n, m in _plain_unet(base).named_modules()
               if pattern.fullmatch(n) and isinstance(m, torch.nn.Linear)}
    assert len(linears) > 8
    g = torch.Generator().manual_seed(11)
    tensors = {}
    for name, lin in linears.items():
        tensors[f"{name}.lora_A.weight"] = torch.randn(rank, lin.in_features, generator=g) * 0.1
        tensors[f"{name}.lora_B.weight"] = torch.randn(lin.out_features, rank, generator=g) * 0.1
    path = tmp_path / "old.safetensors"
    save_file(tensors, str(path), metadata={"format": "fmu-lora/1", "rank": str(rank), "alpha": str(alpha),
                                            "target_modules": OLD_TARGETS, "mode": json.dumps("lora"),
                                            "steps": json.dumps(3)})

    model = FaceMakeUp.from_pretrained(base, adapter)
    inp = _inputs()
    before = _eps(model, inp)
    model.load_lora_weights(path, scale=scale)
    config = model.unet.peft_config["fmu_ft"]
    assert (config.r, config.lora_alpha, config.target_modules) == (rank, alpha, OLD_TARGETS)

    merged = FaceMakeUp.from_pretrained(base, adapter)  # its identity LoRA is the preset's (B = 0)
    with torch.no_grad():
        for name in linears:
            layer = merged.unet.get_submodule(name)
            weight = getattr(layer, "base_layer", layer).weight
            weight += scale * (alpha / rank) * tensors[f"{name}.lora_B.weight"] @ tensors[f"{name}.lora_A.weight"]
    after, reference = _eps(model, inp), _eps(merged, inp)
    assert (after - before).abs().max() > 1e-2                     # the LoRA acts ...
    torch.testing.assert_close(after, reference, rtol=1e-4, atol=1e-5)  # ... as its merge says


def test_an_adapter_without_shading_net_or_lora_gets_a_fresh_shading_net_and_saves(tiny_preset, tmp_path):
    """An h94-style file (IP-Adapter layout, no ControlNet, no LoRA): `fresh_shading` (training)
    starts a ShadingNet copied from the plain UNet, and the model saves and reloads without a LoRA."""
    base, _ = tiny_preset
    g = torch.Generator().manual_seed(5)
    cfg = A.AdapterConfig(id_embed_dim=128, clip_hidden_dim=32, embed_dims=32, perceiver_heads=1)
    plain = _plain_unet(base)
    original = {"image_proj": {k: torch.randn(v.shape, generator=g) * 0.2
                               for k, v in A.image_proj_template(cfg, 32).items()},
                "ip_adapter": {k: torch.randn(v.shape, generator=g) * 0.2
                               for k, v in A.ip_attn_template(plain).items()}}
    path = tmp_path / "ip-adapter-faceid-plusv2_sd15.bin"
    torch.save(original, path)

    bare = FaceMakeUp.from_pretrained(base, path)
    assert bare.shading_net is None and not getattr(bare.unet, "peft_config", None)
    fresh = FaceMakeUp.from_pretrained(base, path, fresh_shading=True)
    assert torch.equal(fresh.shading_net.conv_in.weight, plain.conv_in.weight)
    assert all(torch.count_nonzero(p) == 0 for n, p in fresh.shading_net.named_parameters()
               if n.startswith(("controlnet_down_blocks", "controlnet_mid_block")))  # zero convs
    assert _states_equal(bare.unet, fresh.unet)

    saved = fresh.save_pretrained(tmp_path / "converted")
    again = FaceMakeUp.from_pretrained(base, saved)
    assert _states_equal(fresh.unet, again.unet) and _states_equal(fresh.shading_net, again.shading_net)
    with safe_open(str(saved), framework="pt") as fh:
        assert {k.split(".")[0] for k in fh.keys()} == {"image_proj", "ip_attn", "shading"}  # noqa: SIM118  safe_open is no dict
