"""Foreign adapter checkpoints, built here for the tiny UNet from random weights, converted and
loaded by fmu, predict the same noise as diffusers' own IP-Adapter FaceID-Plus loading path
(`unet._load_ip_adapter_weights` on the original dict + the LoRA loaded by `load_lora_weights`)."""

import json

import pytest
import torch

from fmu.core.errors import UsageError
from fmu.core.model import adapter as A
from fmu.core.model.convert import convert_file, load_adapter_any
from fmu.core.model.facemakeup import FaceMakeUp

CFG = A.AdapterConfig(id_embed_dim=128, clip_hidden_dim=32, embed_dims=32, perceiver_heads=1, lora_rank=8)
LORA = ("to_q", "to_k", "to_v", "to_out")


def _plain_unet(base):
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel.from_pretrained(base, subfolder="unet")


def _original(base, seed, lora_inside):
    """IP-Adapter training layout for the tiny UNet: random projection, to_k_ip/to_v_ip and, when
    asked, FaceID LoRAAttnProcessor weights `{index}.to_q_lora.down.weight` on every processor."""
    g = torch.Generator().manual_seed(seed)
    unet = _plain_unet(base)
    image_proj = {k: torch.randn(v.shape, generator=g) * 0.2 + (1.0 if "norm" in k and k.endswith("weight") else 0.0)
                  for k, v in A.image_proj_template(CFG, 32).items()}
    ip = {k: torch.randn(v.shape, generator=g) * 0.2 for k, v in A.ip_attn_template(unet).items()}
    modules = dict(unet.named_modules())
    if lora_inside:
        for index, name in enumerate(unet.attn_processors):
            attn = modules[name[: -len(".processor")]]
            for part in LORA:
                lin = attn.to_out[0] if part == "to_out" else getattr(attn, part)
                ip[f"{index}.{part}_lora.down.weight"] = torch.randn(8, lin.in_features, generator=g) * 0.1
                ip[f"{index}.{part}_lora.up.weight"] = torch.randn(lin.out_features, 8, generator=g) * 0.1
    return {"image_proj": image_proj, "ip_adapter": ip}, unet


def _controlnet_state(unet, seed):
    torch.manual_seed(seed)
    net = A.new_shading_net(unet)
    with torch.no_grad():
        for name, p in net.named_parameters():  # zero convs would hide a wrong mapping
            if "controlnet_down_blocks" in name or "controlnet_mid_block" in name:
                p.normal_(0, 0.05)
    return {k: v.clone() for k, v in net.state_dict().items()}


def _kohya_lora(unet, seed, rank=6, alpha=3.0):
    g = torch.Generator().manual_seed(seed)
    modules = dict(unet.named_modules())
    sd = {}
    for name in unet.attn_processors:
        attn = name[: -len(".processor")]
        for part in ("to_q", "to_k", "to_v", "to_out.0"):
            lin = modules[f"{attn}.{part}"]
            key = "lora_unet_" + f"{attn}.{part}".replace(".", "_")
            sd[key + ".lora_down.weight"] = torch.randn(rank, lin.in_features, generator=g) * 0.1
            sd[key + ".lora_up.weight"] = torch.randn(lin.out_features, rank, generator=g) * 0.1
            sd[key + ".alpha"] = torch.tensor(alpha)
    return sd


def _inputs():
    g = torch.Generator().manual_seed(3)
    return dict(x=torch.randn(2, 4, 8, 8, generator=g), text=torch.randn(2, 77, 32, generator=g),
                ids=torch.randn(2, 128, generator=g), clip=torch.randn(2, 17, 32, generator=g),
                control=torch.rand(2, 3, 64, 64, generator=g))


def _reference_pipe(base, original, lora_dict=None):
    """diffusers' own path: IP-Adapter loader on the original dict, LoRA via load_lora_weights."""
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline.from_pretrained(base, safety_checker=None, requires_safety_checker=False)
    pipe.unet._load_ip_adapter_weights([original], low_cpu_mem_usage=False)
    inside = pipe.unet._load_ip_adapter_loras([original])
    if inside:
        pipe.load_lora_weights(inside[0], adapter_name="faceid_0")
    if lora_dict is not None:
        pipe.load_lora_weights(dict(lora_dict), adapter_name="faceid_lora")
    return pipe


def _set_identity(unet, inp, id_scale=0.5, s_scale=0.7):
    for proc in unet.attn_processors.values():
        if hasattr(proc, "to_k_ip"):
            proc.scale = [id_scale]
    proj = A.image_projection(unet)
    proj.clip_embeds, proj.shortcut, proj.shortcut_scale = inp["clip"].unsqueeze(1), True, s_scale
    return {"image_embeds": [inp["ids"].unsqueeze(1)]}


@torch.no_grad()
def _reference_noise(pipe, inp, controlnet_state=None):
    from diffusers import ControlNetModel

    unet = pipe.unet
    added = _set_identity(unet, inp)
    down = mid = None
    if controlnet_state is not None:
        net = ControlNetModel.from_unet(_plain_unet_like(unet), conditioning_channels=3)
        net.load_state_dict(controlnet_state, strict=True)
        tokens = unet.encoder_hid_proj(added["image_embeds"])[0]
        tokens = tokens.reshape(tokens.shape[0], -1, tokens.shape[-1])
        down, mid = net(inp["x"], 10, encoder_hidden_states=tokens, controlnet_cond=inp["control"],
                        conditioning_scale=0.5, return_dict=False)
    return unet(inp["x"], 10, encoder_hidden_states=inp["text"], added_cond_kwargs=added,
                down_block_additional_residuals=down, mid_block_additional_residual=mid).sample


def _plain_unet_like(unet):
    from diffusers import UNet2DConditionModel

    config = {k: v for k, v in unet.config.items() if k not in ("encoder_hid_dim_type", "encoder_hid_dim")}
    return UNet2DConditionModel.from_config(config)


@torch.no_grad()
def _fmu_noise(model, inp, control=True):
    added = _set_identity(model.unet, inp)
    return model.predict_noise(inp["x"], 10, inp["text"], added, inp["control"] if control else None,
                               shading_scale=0.5 if control else 0.0)


@pytest.fixture(scope="module")
def authors(tiny_preset, tmp_path_factory):
    base, _ = tiny_preset
    original, unet = _original(base, seed=11, lora_inside=True)
    controlnet = _controlnet_state(unet, seed=12)
    path = tmp_path_factory.mktemp("authors") / "model.bin"
    torch.save({**original, "controlnet": controlnet}, path)
    return base, path, original, controlnet


def test_authors_model_bin_matches_diffusers_loading_path(authors, tmp_path):
    base, path, original, controlnet = authors
    inp = _inputs()
    reference = _reference_noise(_reference_pipe(base, original), inp, controlnet)
    summary = convert_file(path, tmp_path / "conv", base=base)
    assert summary["config"]["lora_rank"] == 8 and summary["shading"]
    assert summary["config"]["face_crop"] == "wide"  # the authors' CLIP face image
    converted_model = FaceMakeUp.from_pretrained(base, summary["path"])
    direct_model = FaceMakeUp.from_pretrained(base, path)
    assert converted_model.cfg.face_crop == direct_model.cfg.face_crop == "wide"
    converted = _fmu_noise(converted_model, inp)
    direct = _fmu_noise(direct_model, inp)  # --adapter model.bin without converting
    assert reference.abs().mean() > 0.1
    torch.testing.assert_close(converted, reference, atol=1e-5, rtol=0)
    torch.testing.assert_close(direct, reference, atol=1e-5, rtol=0)


def test_each_part_of_the_authors_file_changes_the_prediction(authors, tmp_path):
    """The parity above is not vacuous: LoRA and ShadingNet each move the prediction."""
    base, path, original, controlnet = authors
    inp = _inputs()
    model = FaceMakeUp.from_pretrained(base, path)
    with_all = _fmu_noise(model, inp)
    no_shading = _fmu_noise(model, inp, control=False)
    assert (with_all - no_shading).abs().max() > 1e-3
    no_lora = _reference_noise(_reference_pipe(base, {"image_proj": original["image_proj"], "ip_adapter": {
        k: v for k, v in original["ip_adapter"].items() if "_lora." not in k}}), inp, controlnet)
    assert (with_all - no_lora).abs().max() > 1e-3


def test_h94_safetensors_with_kohya_lora_file_matches_diffusers(tiny_preset, tmp_path):
    from safetensors.torch import save_file

    base, _ = tiny_preset
    original, unet = _original(base, seed=21, lora_inside=False)
    flat = {f"{part}.{k}": v for part in ("image_proj", "ip_adapter") for k, v in original[part].items()}
    save_file(flat, tmp_path / "ip-adapter-faceid-plusv2_sd15.safetensors")
    torch.save(original, tmp_path / "ip-adapter-faceid-plusv2_sd15.bin")
    lora = _kohya_lora(unet, seed=22, rank=6, alpha=3.0)  # alpha != rank: scale 0.5 must be folded in
    save_file(lora, tmp_path / "ip-adapter-faceid-plusv2_sd15_lora.safetensors")

    inp = _inputs()
    reference = _reference_noise(_reference_pipe(base, original, lora), inp)
    for name in ("ip-adapter-faceid-plusv2_sd15.safetensors", "ip-adapter-faceid-plusv2_sd15.bin"):
        summary = convert_file(tmp_path / name, tmp_path / f"conv-{name}", base=base,
                               lora=tmp_path / "ip-adapter-faceid-plusv2_sd15_lora.safetensors")
        assert not summary["shading"] and summary["config"]["lora_rank"] == 6
        model = FaceMakeUp.from_pretrained(base, summary["path"])
        assert model.shading_net is None and model.cfg.face_crop == "aligned"  # h94: the ArcFace crop
        torch.testing.assert_close(_fmu_noise(model, inp, control=False), reference, atol=1e-5, rtol=0)
    direct = FaceMakeUp.from_pretrained(base, tmp_path / "ip-adapter-faceid-plusv2_sd15.bin",
                        lora=tmp_path / "ip-adapter-faceid-plusv2_sd15_lora.safetensors")
    torch.testing.assert_close(_fmu_noise(direct, inp, control=False), reference, atol=1e-5, rtol=0)
    # without the LoRA file the identity channel alone is loaded: a different prediction
    bare = FaceMakeUp.from_pretrained(base, tmp_path / "ip-adapter-faceid-plusv2_sd15.bin")
    assert (_fmu_noise(bare, inp, control=False) - reference).abs().max() > 1e-3


def test_converted_file_is_an_fmu_adapter_with_the_inferred_config(authors, tmp_path):
    base, path, original, _ = authors
    summary = convert_file(path, tmp_path / "x.safetensors", base=base)
    tensors, meta = A.read_adapter(summary["path"])
    cfg = json.loads(meta["config"])
    assert (cfg["id_embed_dim"], cfg["clip_hidden_dim"], cfg["embed_dims"], cfg["perceiver_heads"],
            cfg["num_tokens"]) == (128, 32, 32, 1, 4)
    # every to_k_ip came over unchanged, under its processor's name
    ip = A.split(tensors, "ip_attn")
    assert torch.equal(ip["down_blocks__0__attentions__0__transformer_blocks__0__attn2__processor.to_k_ip.0.weight"],
                       original["ip_adapter"]["1.to_k_ip.weight"])
    assert json.loads(meta["converted_from"])["file"] == "model.bin"


def test_wrong_unet_is_refused_with_what_does_not_fit(authors):
    from fmu.core.model.convert import SD15_UNET_CONFIG

    _, path, _, _ = authors
    with pytest.raises(UsageError, match="does not fit this UNet"):
        load_adapter_any(path, SD15_UNET_CONFIG)


def test_lora_given_twice_is_refused(authors, tiny_preset, tmp_path):
    from safetensors.torch import save_file

    base, path, _, _ = authors
    save_file(_kohya_lora(_plain_unet(base), seed=1), tmp_path / "l.safetensors")
    with pytest.raises(UsageError, match="LoRA given twice"):
        convert_file(path, tmp_path / "o", base=base, lora=tmp_path / "l.safetensors")


def test_fmu_convert_cli_writes_an_adapter_and_refuses_bad_input(authors, tmp_path):
    from typer.testing import CliRunner

    from fmu.app import app  # the real app: its handler turns usage errors into exit 2

    base, path, _, _ = authors
    runner = CliRunner()
    result = runner.invoke(app, ["convert", str(path), "--out", str(tmp_path / "a"), "--base", str(base)],
                           env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert (tmp_path / "a" / "adapter.safetensors").is_file() and "lora_rank" in result.output
    for junk in (b"\x80\x02junk", b"junk\n"):  # a broken pickle, and text (torch: KeyError on its magic)
        (tmp_path / "junk.bin").write_bytes(junk)
        bad = runner.invoke(app, ["convert", str(tmp_path / "junk.bin"), "--out", str(tmp_path / "b")])
        assert bad.exit_code == 2 and "not a readable weights file" in bad.output, bad.output
        assert not (tmp_path / "b").exists()
