"""The weight sets a real run needs, as data: where each piece comes from, which files, the
folder it lands in under the weights folder, the role it plays in `fmu generate`, its licence.

Two sets, one per adapter (DESIGN.md §3-4); both share the authors' inference components:
- `authors`: the Face-MakeUpV2 checkpoint (identity channel + ShadingNet), unpacked from the
  authors' multi-part RAR and converted to fmu's adapter format.
- `h94`: h94's IP-Adapter-FaceID-PlusV2 (identity channel only: no ShadingNet, so no 3D channel)
  with its separate LoRA file.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class HubPiece:
    """Files of one Hugging Face Hub model repo, fetched into FOLDER with their repo paths kept."""

    name: str
    repo_id: str
    patterns: tuple[str, ...]       # allow_patterns (fnmatch) of the files a run reads
    folder: str                     # under the weights folder
    roles: dict                     # generate option -> path inside FOLDER ("" = FOLDER itself)
    licence: str
    revision: str = "main"


@dataclass(frozen=True)
class UrlFile:
    name: str
    url: str
    sha256: str | None = None       # checked after download when known (the LFS pointer's oid)
    size: int | None = None
    git_sha1: str | None = None     # a non-LFS hub file's git blob id: its checksum when no sha256


@dataclass(frozen=True)
class UrlPiece:
    """Files outside the Hub (GitHub releases / LFS), downloaded resumably, checked, then unpacked:
    `unpack` = "zip" (insightface packs), "rar+convert" (the authors' checkpoint) or "none" (used as
    downloaded)."""

    name: str
    files: tuple[UrlFile, ...]
    folder: str
    roles: dict
    licence: str
    unpack: str


BASE = HubPiece(
    name="base", repo_id="SG161222/Realistic_Vision_V4.0_noVAE",
    # diffusers layout; safetensors only (no .bin duplicates, no safety checker)
    patterns=("model_index.json", "scheduler/*", "tokenizer/*", "feature_extractor/*",
              "text_encoder/config.json", "text_encoder/model.safetensors",
              "unet/config.json", "unet/diffusion_pytorch_model.safetensors",
              "vae/config.json", "vae/diffusion_pytorch_model.safetensors"),
    folder="realistic-vision-v4", roles={"base_model": ""},
    licence="CreativeML OpenRAIL-M (Stable Diffusion 1.5 fine-tune; use restrictions of the licence apply)")
VAE = HubPiece(
    name="vae", repo_id="stabilityai/sd-vae-ft-mse",
    patterns=("config.json", "diffusion_pytorch_model.safetensors"),
    folder="sd-vae-ft-mse", roles={"vae": ""}, licence="MIT")
IMAGE_ENCODER = HubPiece(
    name="image-encoder", repo_id="h94/IP-Adapter",
    patterns=("models/image_encoder/config.json", "models/image_encoder/model.safetensors"),
    folder="ip-adapter", roles={"image_encoder": "models/image_encoder"},
    licence="Apache-2.0 (OpenCLIP ViT-H/14, LAION-2B)")
H94_ADAPTER = HubPiece(
    name="adapter-h94", repo_id="h94/IP-Adapter-FaceID",
    patterns=("ip-adapter-faceid-plusv2_sd15.bin", "ip-adapter-faceid-plusv2_sd15_lora.safetensors"),
    folder="ip-adapter-faceid",
    roles={"adapter": "ip-adapter-faceid-plusv2_sd15.bin",
           "adapter_lora": "ip-adapter-faceid-plusv2_sd15_lora.safetensors"},
    licence="non-commercial research use only (model card: built on insightface's non-commercial models)")

# Face-MakeUpV2's released checkpoint: git-LFS files of the authors' GitHub repository, a RAR archive
# in four volumes holding model.bin (image_proj + ip_adapter + ControlNet, IP-Adapter training layout).
# sha256 and sizes are the LFS pointers' oids, so a download is checked against what was published.
AUTHORS_REPO = "https://github.com/ddw2AIGROUP2CQUPT/Face-MakeUpV2"
_LFS = "https://media.githubusercontent.com/media/ddw2AIGROUP2CQUPT/Face-MakeUpV2/main/checkpoints/"
AUTHORS_ADAPTER = UrlPiece(
    name="adapter-authors", folder="face-makeup-v2", unpack="rar+convert",
    files=(UrlFile("model.part1.rar", _LFS + "model.part1.rar",
                   "d38a882b4a67c8dfff8857c9d8a70a1ae837b8eac063b209912ea5bb63305f84", 734003200),
           UrlFile("model.part2.rar", _LFS + "model.part2.rar",
                   "7dff9acf722e61d15f2d20ada4a1de6e10a66a9bfc77cc7a8d1bf350b1d5509e", 734003200),
           UrlFile("model.part3.rar", _LFS + "model.part3.rar",
                   "990a373a1a8985612114b81fef7caa9a2fc7d5449fa548a0b3fd4d610de9ce1d", 734003200),
           UrlFile("model.part4.rar", _LFS + "model.part4.rar",
                   "828a444475bc74cfff38e42b3cd42f6c2e96a9c4a8afb8567486b72c41bc6e05", 632625741)),
    roles={"adapter": "adapter.safetensors"},
    licence="MIT (the authors' repository); trained on insightface embeddings, see insightface's terms")

# insightface's own model-zoo release (the URL insightface.utils.storage downloads from).
BUFFALO_L = UrlPiece(
    name="insightface", folder="insightface", unpack="zip",
    files=(UrlFile("buffalo_l.zip",
                   "https://github.com/deepinsight/insightface/releases/download/model-zoo/buffalo_l.zip"),),
    roles={"face_models": "models"},
    licence="non-commercial research use only (insightface's pretrained models)")

# mediapipe's Face Landmarker bundle (a zip of a face detector and the 478-point landmark model) for the
# Tasks face mesh that Python 3.13+ uses (core/shading/reconstruct.py); 3.11-3.12 run the legacy mesh,
# whose model is inside the wheel. No role: the mesh finds it in the weights folder by name. Part of
# both sets, so the default pull brings it and `--only face-landmarker` fetches it alone.
FACE_LANDMARKER = UrlPiece(
    name="face-landmarker", folder="face-landmarker", unpack="none",
    files=(UrlFile("face_landmarker.task", "https://storage.googleapis.com/mediapipe-models/face_landmarker/"
                   "face_landmarker/float16/1/face_landmarker.task"),),
    roles={}, licence="Apache-2.0 (Google's MediaPipe Face Landmarker model card)")

# The models `fmu score` runs (`--set scoring`, an add-on beside a generate set), from the sources the
# published metrics use: CLIP-T / CLIP-I on OpenAI's ViT-L/14, DINO ViT-S/16, LPIPS v0.1 (torchvision's
# AlexNet + the LPIPS linear heads), FID's TF-Inception port of pytorch-fid.
CLIP_L14 = HubPiece(
    name="clip", repo_id="openai/clip-vit-large-patch14",
    patterns=("config.json", "model.safetensors", "preprocessor_config.json", "tokenizer.json",
              "tokenizer_config.json", "vocab.json", "merges.txt"),
    folder="clip-vit-large-patch14", roles={"clip_model": ""}, licence="MIT (OpenAI CLIP)")
DINO = HubPiece(
    # main holds the weights as pytorch_model.bin only (the safetensors copy sits on an unmerged PR
    # branch); transformers reads it with torch.load(weights_only=True)
    name="dino", repo_id="facebook/dino-vits16",
    patterns=("config.json", "preprocessor_config.json", "pytorch_model.bin"),
    folder="dino-vits16", roles={"dino_model": ""}, licence="Apache-2.0")
LPIPS = UrlPiece(
    name="lpips", folder="lpips", unpack="none",
    files=(UrlFile("alexnet-owt-7be5be79.pth", "https://download.pytorch.org/models/alexnet-owt-7be5be79.pth"),
           UrlFile("alex.pth", "https://github.com/richzhang/PerceptualSimilarity/raw/master/lpips/weights/v0.1/"
                   "alex.pth")),
    roles={"lpips_weights": ""}, licence="BSD-3-Clause (torchvision AlexNet), BSD-2-Clause (LPIPS heads)")
INCEPTION = UrlPiece(
    name="inception", folder="inception", unpack="none",
    files=(UrlFile("pt_inception-2015-12-05-6726825d.pth",
                   "https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/"
                   "pt_inception-2015-12-05-6726825d.pth"),),
    roles={"fid_weights": "pt_inception-2015-12-05-6726825d.pth"}, licence="Apache-2.0 (pytorch-fid)")

SETS: dict[str, tuple] = {
    "authors": (BASE, VAE, IMAGE_ENCODER, AUTHORS_ADAPTER, BUFFALO_L, FACE_LANDMARKER),
    "h94": (BASE, VAE, IMAGE_ENCODER, H94_ADAPTER, BUFFALO_L, FACE_LANDMARKER),
    "scoring": (CLIP_L14, DINO, LPIPS, INCEPTION),
}
# sets pulled beside a generate set into the same folder: they add roles, never replace the folder's set
ADDONS = ("scoring",)
SET_NAMES = tuple(SETS)
DEFAULT_SET = "authors"


def piece_names(set_name: str) -> tuple[str, ...]:
    return tuple(p.name for p in SETS[set_name])
