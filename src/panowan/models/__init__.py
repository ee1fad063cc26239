"""The dual-stream Wan model: presets, latent codecs, I2V conditioning, PluckerNet, interaction
layers, the dual forward and LoRA (see docs/ARCHITECTURE.md, "models").

Submodules are imported lazily by their users (`from panowan.models.dual_stream import DualStreamWan`)
so that importing `panowan.models` stays cheap.
"""
