"""fmu from Python: `fmu.generate`, `fmu.score` and the model `fmu.FaceMakeUp`.

    import fmu
    summary = fmu.generate("manifest.csv", out="runs/a", steps=30)   # what `fmu generate` does
    result = fmu.score("runs/a", metrics=["facesim"])                  # what `fmu score` does
    model = fmu.FaceMakeUp.from_pretrained(preset="tiny")              # loads; features are calls:
    model.set_scheduler("dpm++")                                       # enable_vae_tiling(), ...
    image = model("photo.jpg", "a portrait", seed=1)                   # one PIL image

Quiet by default: no library progress bars, no warnings a caller cannot act on; `verbose=True`
shows fmu's own progress bar (and the libraries' output). Errors are exceptions (`UsageError` for
bad options), never a process exit.
"""

from __future__ import annotations

import logging
import warnings
from contextlib import contextmanager, nullcontext
from pathlib import Path

import numpy as np
from PIL import Image

from fmu.core.faces import get_backend
from fmu.core.faces.crops import FRAME_SCALE
from fmu.core.images import load_rgb
from fmu.core.model.facemakeup import FaceMakeUp as _Model
from fmu.core.model.pipeline import Request
from fmu.core.model.presets import SPECS, ensure_preset
from fmu.core.model.settings import PROMPT_PREFIX, Settings, with_prefix
from fmu.core.runner.conditions import ConditionProvider
from fmu.core.runner.config import GenerateConfig
from fmu.core.runner.generate import RunSummary, run_generate
from fmu.core.scoring import ScoreOptions, ScoreResult, check_options, metric_names, score_images, score_run

from .console import progress_bar
from .score_cmd import score_engine

_LIBRARIES = ("diffusers", "transformers", "accelerate", "peft", "huggingface_hub")


@contextmanager
def library_output(verbose: bool):
    """Quiet libraries for the length of a call (their own settings are put back afterwards):
    their loggers at ERROR, their progress bars off, their FutureWarnings / UserWarnings hidden."""
    if verbose:
        yield
        return
    # deferred: heavy (torch); a verbose call never needs them
    import diffusers.utils.logging as diffusers_logging
    import transformers.utils.logging as transformers_logging

    levels = {name: logging.getLogger(name).level for name in _LIBRARIES}
    bars = (diffusers_logging.is_progress_bar_enabled(), transformers_logging.is_progress_bar_enabled())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        warnings.simplefilter("ignore", UserWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        for name in _LIBRARIES:
            logging.getLogger(name).setLevel(logging.ERROR)
        diffusers_logging.disable_progress_bar()
        transformers_logging.disable_progress_bar()
        try:
            yield
        finally:
            for name, level in levels.items():
                logging.getLogger(name).setLevel(level)
            if bars[0]:
                diffusers_logging.enable_progress_bar()
            if bars[1]:
                transformers_logging.enable_progress_bar()


def generate(manifest: str | Path, out: str | Path = "runs/latest", *, verbose: bool = False,
             **options) -> RunSummary:
    """Run `fmu generate MANIFEST --out OUT`; `options`: the run's options by their flat names (the
    command's flags with `_` for `-`: steps=30, device="cuda", batch_size=8, ...; each belongs to
    one of GenerateConfig's groups). Returns the run summary (ok, failed, skipped, seconds,
    exit_code); results.parquet and run.json are in `out`."""
    cfg = GenerateConfig.from_options(Path(manifest), out=Path(out), **options)  # TypeError names unknown ones
    with library_output(verbose), (progress_bar() if verbose else nullcontext()) as progress:
        return run_generate(cfg, progress=progress)


def score(run_dir: str | Path | None = None, *, images: str | Path | None = None,
          manifest: str | Path | None = None, out: str | Path | None = None, metrics=None,
          verbose: bool = False, **options) -> ScoreResult:
    """Run `fmu score RUN_DIR` (or `--images DIR --manifest FILE`); `metrics`: names out of
    `fmu.core.scoring.metric_names()` (default: all); `options`: ScoreOptions' fields (face_backends,
    clip_model, device, ...). Returns the result: `out_dir` (scores.parquet, summary.json) and
    `all_ok`."""
    if (run_dir is None) == (images is None) or (images is not None and manifest is None):
        raise TypeError("score() takes either run_dir, or images= with manifest=")
    opts = ScoreOptions(metrics=tuple(metrics or metric_names()), **options)
    check_options(opts)
    engine = score_engine(opts)
    with library_output(verbose):
        progress = progress_bar(transient=True) if verbose else None
        if run_dir is not None:
            return score_run(Path(run_dir), opts, backend_from_run="face_backends" not in options,
                             progress=progress, engine=engine)
        return score_images(Path(images), Path(manifest), None if out is None else Path(out), opts,
                            progress=progress, engine=engine)


class FaceMakeUp(_Model):
    """The model, callable on one reference photo: `FaceMakeUp.from_pretrained(...)(photo, prompt)`.
    The face analysis (dlib unless `set_face_backend` says otherwise) and the shading render are
    the ones `fmu generate` runs, in the face frame."""

    @classmethod
    def from_pretrained(cls, base: str | Path | None = None, adapter: str | Path | None = None, *,
                        preset: str | None = None, verbose: bool = False, **options) -> FaceMakeUp:
        """`base` + `adapter` (see `fmu.core.model.facemakeup.FaceMakeUp.from_pretrained` for
        `options`), or `preset="tiny"`: the offline toy models."""
        if preset is not None:
            base, adapter = ensure_preset(preset)
        with library_output(verbose):
            model = super().from_pretrained(base, adapter, **options)
        model.verbose = verbose
        model.size = SPECS[preset][1] if preset is not None else 512
        model.set_face_backend("dlib")
        return model

    # the feature calls that load or build library objects, as quiet as loading
    def set_scheduler(self, name: str) -> None:
        with library_output(self.verbose):
            super().set_scheduler(name)

    def load_speed_lora(self, source: str | Path, scale: float = 1.0, *, offline: bool = True) -> None:
        with library_output(self.verbose):
            super().load_speed_lora(source, scale, offline=offline)

    def set_vae_decoder(self, spec: str | None, **kwargs) -> None:
        with library_output(self.verbose):
            super().set_vae_decoder(spec, **kwargs)

    def set_face_backend(self, name: str, models_dir: str | Path | None = None, device: str = "cpu") -> None:
        """The face analysis of references: dlib (offline) or insightface (`models_dir`: its pack)."""
        folder = None if models_dir is None else Path(models_dir)
        self.face_backend = get_backend(name, device=device, models_dir=folder)

    def __call__(self, reference: str | Path, prompt: str, *, seed: int = 0, negative_prompt: str | None = None,
                 multi_face: str = "best", frame_scale: float = FRAME_SCALE, renderer: str = "auto",
                 prefix: str | None = PROMPT_PREFIX, cache_dir: str | Path | None = None,
                 **settings) -> Image.Image:
        """One image of the person in `reference` (a photo file); `settings`: Settings' fields
        (steps, guidance_scale, id_scale, s_scale, shading_scale, width, height, eta). `cache_dir`:
        where the shading render is kept (default: not kept)."""
        import tempfile  # deferred: only calls without a cache folder need it

        chosen = Settings(**{"width": self.size, "height": self.size, **settings})
        photo = Path(reference)
        analysis = self.face_backend.analyse(load_rgb(photo), multi_face, crop=self.cfg.face_crop)
        with library_output(self.verbose), \
                (nullcontext(cache_dir) if cache_dir else tempfile.TemporaryDirectory()) as root:
            conditions = ConditionProvider(Path(root), renderer, enabled=self.shading_net is not None,
                                           frame_scale=frame_scale)
            condition = conditions.get(photo, None, chosen.width, chosen.height, analysis.landmarks)
            request = Request(prompt=with_prefix(prompt, prefix), id_embedding=analysis.embedding,
                              face_crop=analysis.crop, seed=seed, negative_prompt=negative_prompt,
                              condition=None if condition is None else condition.condition)
            (image,) = self.generate([request], chosen)
        return Image.fromarray(np.asarray(image))
