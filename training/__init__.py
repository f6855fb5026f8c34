"""Training: the method's losses, the attention-map capture they need, and the identity encoder.

Submodules are imported explicitly (`from training.losses import ...`) so that importing
`training` stays cheap and does not pull in onnx or diffusers.
"""
