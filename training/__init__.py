"""Training: `fmu prepare` (images -> cached faces, shading and a training manifest), the data set,
the method's losses and the attention-map capture they need, the identity encoder, the trainer
loop with its checkpoints, and `fmu finetune`.

Submodules are imported explicitly (`from training.losses import ...`) so that importing
`training` stays cheap and does not pull in onnx or diffusers.
"""
