"""Keep the text cross-attention maps L_map needs, without changing what the UNet computes.

The capturing processors run the layer's original processor unchanged and, meanwhile, catch the
query and key it computes (forward hooks on `attn.to_q` / `attn.to_k`, whatever those are at call
time: plain Linear or a peft LoRA wrapper, so LoRA and its dropout are exactly the ones used).
From them they rebuild softmax(q·kᵀ·attn.scale) with `attn.get_attention_scores` — the
probabilities scaled_dot_product_attention used internally — and store them per layer name.

Only cross-attention layers at the map resolution (latent / 2 for SD: 32×32 at 512 px) get a
capturing processor; every other layer keeps its own.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from diffusers.models.attention_processor import Attention, AttnProcessor2_0, IPAdapterAttnProcessor2_0


@dataclass
class AttentionStore:
    """Maps caught during the last UNet forward: layer name -> (B·heads, map_size², text_len)."""

    map_size: int
    layers: list[str] = field(default_factory=list)   # the attention modules that capture
    maps: dict[str, torch.Tensor] = field(default_factory=dict)

    def clear(self) -> None:
        """Drop the maps (and the graph they hold): call after each optimiser step."""
        self.maps.clear()

    def values(self) -> list[torch.Tensor]:
        return [self.maps[name] for name in self.layers if name in self.maps]


def _run_and_capture(store, name, run, attn, attention_mask):
    caught = {}
    handles = [
        attn.to_q.register_forward_hook(lambda module, args, out: caught.setdefault("q", out)),
        attn.to_k.register_forward_hook(lambda module, args, out: caught.setdefault("k", out)),
    ]
    try:
        output = run()
    finally:
        for handle in handles:
            handle.remove()
    query, key = caught["q"], caught["k"]
    # The runtime check guards against training at a resolution the install did not plan for.
    if query.shape[1] == store.map_size**2:
        if attention_mask is not None:
            attention_mask = attn.prepare_attention_mask(attention_mask, key.shape[1], key.shape[0])
        store.maps[name] = attn.get_attention_scores(
            attn.head_to_batch_dim(query), attn.head_to_batch_dim(key), attention_mask
        )
    return output


class CapturingIPAdapterAttnProcessor(IPAdapterAttnProcessor2_0):
    """An IP-Adapter processor that also stores the text attention probabilities.

    It shares the original's `to_k_ip` / `to_v_ip` modules (same parameters, same state_dict
    keys, same optimiser state) and runs the original's own `__call__`; `scale` reads and
    writes through to the original so `set_ip_adapter_scale` keeps working while installed.
    """

    def __init__(self, original: IPAdapterAttnProcessor2_0, store: AttentionStore, name: str):
        torch.nn.Module.__init__(self)
        self.to_k_ip = original.to_k_ip
        self.to_v_ip = original.to_v_ip
        self.hidden_size = original.hidden_size
        self.cross_attention_dim = original.cross_attention_dim
        self.num_tokens = original.num_tokens
        # Kept out of the module tree, or its parameters would appear twice under new names.
        self.__dict__["original"] = original
        self.__dict__["store"] = store
        self.__dict__["layer_name"] = name

    @property
    def scale(self):
        return self.original.scale

    @scale.setter
    def scale(self, value):
        self.original.scale = value

    # Same signature as the parent: Attention.forward filters kwargs (ip_adapter_masks) by it.
    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None,
                 temb=None, scale=1.0, ip_adapter_masks=None):
        def run():
            return self.original(attn, hidden_states, encoder_hidden_states, attention_mask, temb,
                                 scale=scale, ip_adapter_masks=ip_adapter_masks)

        return _run_and_capture(self.store, self.layer_name, run, attn, attention_mask)


class CapturingAttnProcessor(AttnProcessor2_0):
    """The plain SDPA processor (no IP-Adapter loaded) plus the text attention probabilities."""

    def __init__(self, original: AttnProcessor2_0, store: AttentionStore, name: str):
        self.original, self.store, self.layer_name = original, store, name

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None,
                 temb=None, *args, **kwargs):
        def run():
            return self.original(attn, hidden_states, encoder_hidden_states, attention_mask, temb,
                                 *args, **kwargs)

        return _run_and_capture(self.store, self.layer_name, run, attn, attention_mask)


def _downsample_factor(name: str, num_blocks: int) -> int:
    """How many times the UNet halved the latent before this layer (SD UNet: every block but
    the last one down-samples; the up path mirrors it)."""
    if name.startswith("down_blocks."):
        return 2 ** int(name.split(".")[1])
    if name.startswith("mid_block"):
        return 2 ** (num_blocks - 1)
    if name.startswith("up_blocks."):
        return 2 ** (num_blocks - 1 - int(name.split(".")[1]))
    raise ValueError(f"unexpected attention layer {name!r}")


def install_attention_capture(unet, map_size: int, latent_size: int | None = None) -> AttentionStore:
    """Give the text cross-attention layers whose maps are map_size×map_size a capturing processor.

    latent_size defaults to unet.config.sample_size (64 for SD1.5 at 512 px, where map_size 32
    selects down_blocks.1 and up_blocks.2). Install after LoRA/IP-Adapter are loaded; undo with
    `remove_attention_capture`.
    """
    if any(isinstance(m, Attention) and _is_capturing(m.processor) for m in unet.modules()):
        raise RuntimeError("attention capture is already installed on this UNet")
    latent_size = latent_size or unet.config.sample_size
    num_blocks = len(unet.config.block_out_channels)
    store = AttentionStore(map_size=map_size)
    for name, module in unet.named_modules():
        if not (isinstance(module, Attention) and module.is_cross_attention):
            continue
        if not name.startswith(("down_blocks.", "mid_block", "up_blocks.")):
            continue                      # e.g. the IP image projection's own resampler
        if latent_size // _downsample_factor(name, num_blocks) != map_size:
            continue
        processor = module.processor
        if isinstance(processor, IPAdapterAttnProcessor2_0):
            module.set_processor(CapturingIPAdapterAttnProcessor(processor, store, name))
        elif isinstance(processor, AttnProcessor2_0):
            module.set_processor(CapturingAttnProcessor(processor, store, name))
        else:
            raise TypeError(f"{name}: cannot capture attention from {type(processor).__name__}")
        store.layers.append(name)
    if not store.layers:
        raise ValueError(f"no cross-attention layer works at {map_size}×{map_size} (latent {latent_size})")
    return store


def _is_capturing(processor) -> bool:
    return isinstance(processor, (CapturingIPAdapterAttnProcessor, CapturingAttnProcessor))


def remove_attention_capture(unet) -> None:
    """Put back the very processor objects `install_attention_capture` replaced."""
    for module in unet.modules():
        if isinstance(module, Attention) and _is_capturing(module.processor):
            module.set_processor(module.processor.original)
