"""LPIPS (Zhang et al. 2018, v0.1, AlexNet): perceptual distance between reference and output.

fmu compares each output with its reference, both centre-cropped and resized to 256x256.
Written here without torchvision (whose CPU wheel breaks imports on this stack): the
AlexNet feature stack uses torchvision's state-dict layout (`features.{0,3,6,8,10}.*`, the
published `alexnet-owt-7be5be79.pth`), the five linear heads use the lpips package's
layout (`lin{0..4}.model.1.weight`, `weights/v0.1/alex.pth`). Both load with
`torch.load(weights_only=True)` or safetensors; nothing is downloaded.

LPIPS(x, y) = sum_l mean_hw( w_l . (f_l(x)/|f_l(x)| - f_l(y)/|f_l(y)|)^2 ),
inputs scaled to [-1, 1] then shifted/scaled by the lpips ScalingLayer constants.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np

from ..images import to_square
from .weights import MetricUnavailable, first_existing, load_state_dict, torch_hub_checkpoints

SIZE = 256
CHANNELS = (64, 192, 384, 256, 256)
SHIFT = (-0.030, -0.088, -0.188)
SCALE = (0.458, 0.448, 0.450)
BACKBONE_NAMES = ("alexnet-owt-7be5be79.pth", "alexnet.pth", "alexnet.safetensors")
LIN_NAMES = ("alex.pth", "lpips_alex.pth", "alex.safetensors")


def _torch_modules():
    # deferred: heavy (torch); the module classes are built on first use
    import torch
    from torch import nn

    class AlexNetLPIPS(nn.Module):
        """torchvision AlexNet `features` (same indices) + LPIPS linear heads."""

        def __init__(self):
            super().__init__()
            self.features = nn.Sequential(
                nn.Conv2d(3, 64, 11, stride=4, padding=2), nn.ReLU(inplace=False), nn.MaxPool2d(3, 2),
                nn.Conv2d(64, 192, 5, padding=2), nn.ReLU(inplace=False), nn.MaxPool2d(3, 2),
                nn.Conv2d(192, 384, 3, padding=1), nn.ReLU(inplace=False),
                nn.Conv2d(384, 256, 3, padding=1), nn.ReLU(inplace=False),
                nn.Conv2d(256, 256, 3, padding=1), nn.ReLU(inplace=False),
            )
            self.lins = nn.ModuleList(nn.Conv2d(c, 1, 1, bias=False) for c in CHANNELS)
            self.register_buffer("shift", torch.tensor(SHIFT).view(1, 3, 1, 1))
            self.register_buffer("scale", torch.tensor(SCALE).view(1, 3, 1, 1))

        TAPS = (1, 4, 7, 9, 11)   # the ReLU after each conv

        def taps(self, x):
            x = (x - self.shift) / self.scale
            out = []
            for i, layer in enumerate(self.features):
                x = layer(x)
                if i in self.TAPS:
                    out.append(x)
            return out

        def forward(self, a, b):
            total = 0
            for lin, fa, fb in zip(self.lins, self.taps(a), self.taps(b)):
                na = fa / (fa.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
                nb = fb / (fb.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
                total = total + lin((na - nb) ** 2).mean(dim=(2, 3))
            return total.view(-1)

    return AlexNetLPIPS


def _lpips_package_lin() -> Path | None:
    """The linear heads shipped in the `lpips` package, found without importing it (its
    import needs torchvision)."""
    spec = importlib.util.find_spec("lpips")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations))) / "weights" / "v0.1" / "alex.pth"


def find_weights(weights_dir: Path | None) -> tuple[Path, Path]:
    d = Path(weights_dir) if weights_dir else None
    backbone = first_existing(([d / n for n in BACKBONE_NAMES] if d else [])
                              + [torch_hub_checkpoints() / BACKBONE_NAMES[0]])
    lin = first_existing(([d / n for n in LIN_NAMES] if d else []) + [_lpips_package_lin()])
    missing = []
    if backbone is None:
        missing.append(f"{BACKBONE_NAMES[0]} (AlexNet)")
    if lin is None:
        missing.append("alex.pth (LPIPS v0.1 heads)")
    if missing:
        where = f"{d} or " if d else ""
        raise MetricUnavailable(f"needs {' and '.join(missing)}, not in {where}{torch_hub_checkpoints()}; "
                                "pass --lpips-weights DIR")
    return backbone, lin


class LpipsScorer:
    def __init__(self, weights_dir: Path | None = None, device: str = "cpu", batch_size: int = 8):
        backbone, lin = find_weights(weights_dir)
        self.model = build_lpips(load_state_dict(backbone), load_state_dict(lin)).to(device).eval()
        self.source = f"{backbone} + {lin}"
        self.device, self.batch_size = device, batch_size

    def distances(self, refs: list[np.ndarray], outs: list[np.ndarray]) -> np.ndarray:
        import torch  # deferred: heavy (torch)

        vals = []
        for i in range(0, len(outs), self.batch_size):
            a = to_lpips_tensor(refs[i:i + self.batch_size]).to(self.device)
            b = to_lpips_tensor(outs[i:i + self.batch_size]).to(self.device)
            with torch.inference_mode():
                vals.append(self.model(a, b).float().cpu().numpy())
        return np.concatenate(vals) if vals else np.zeros(0, np.float32)


def build_lpips(backbone_state: dict, lin_state: dict):
    """The LPIPS network from the two published state dicts (strict: every weight must fit)."""
    model = _torch_modules()()
    feats = {k[len("features."):]: v for k, v in backbone_state.items() if k.startswith("features.")}
    model.features.load_state_dict(feats, strict=True)
    lins = {f"{i}.weight": lin_state[f"lin{i}.model.1.weight"] for i in range(len(CHANNELS))}
    model.lins.load_state_dict(lins, strict=True)
    return model


def to_lpips_tensor(images: list[np.ndarray]):
    """uint8 HxWx3 -> (N, 3, 256, 256) float in [-1, 1], centre-cropped square first."""
    import torch  # deferred: heavy (torch)

    arr = np.stack([to_square(np.asarray(im), SIZE) for im in images]).astype(np.float32)
    return torch.from_numpy(arr / 127.5 - 1.0).permute(0, 3, 1, 2).contiguous()
