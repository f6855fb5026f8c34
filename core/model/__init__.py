"""The model: SD1.5 + the FaceID-PlusV2 identity channel (diffusers IP-Adapter classes, peft LoRA)
+ the ShadingNet ControlNet; loading, saving, converting the authors' and h94 checkpoints, and the
offline presets (tiny diffusers components from configs, tiny ONNX face models for insightface's
path)."""
