"""Hugging Face interop: load safetensors checkpoints into fgjax models, and write them back.

    model, cfg = fgjax.hf.load("path/to/llava-1.5-7b-hf", dtype="bfloat16")
    fgjax.hf.save(model, "out/dir")

`load(path, *, dtype="float32", compute_dtype=None, scan_layers=True, dual_encoder=False,
**overrides)` reads a directory holding `config.json` and `model.safetensors` (or shards with
`model.safetensors.index.json`) and returns `(model, config)`:

  LlamaForCausalLM, MistralForCausalLM, Qwen2ForCausalLM, GemmaForCausalLM -> Decoder
  SiglipVisionModel, CLIPVisionModel (and the vision half of SiglipModel / CLIPModel),
  Dinov2Model, Dinov2WithRegistersModel                                      -> VisionEncoder
  LlavaForConditionalGeneration (both key layouts; CLIP or SigLIP tower)     -> VLM
  CLIPModel, SiglipModel with `dual_encoder=True` (image and text towers,
  projections, logit scale and bias; fgjax/hf/dual_encoders.py)             -> ContrastiveModel
  Gemma3ForConditionalGeneration, PaliGemmaForConditionalGeneration (1 and 2) -> VLM
  Qwen2_5_VLForConditionalGeneration (both key layouts; images, no video)    -> Qwen25VL
  Qwen3VLForConditionalGeneration (DeepStack; images, no video)              -> Qwen3VL
  LlavaNextForConditionalGeneration, LlavaOnevisionForConditionalGeneration
    (any-resolution tiling; images, no video)                                -> LlavaNext
  InternVLForConditionalGeneration (InternVL 2.5 / 3 / 3.5: InternViT, pixel
    shuffle, Qwen2 / Qwen3 / Llama; tiles as images; fgjax/hf/internvl.py)     -> VLM

`dtype` is the parameter dtype, `compute_dtype` the activation dtype, and `overrides` replace
other fgjax config fields (`feature_layer`, `input_size`, `remat`, ...). Both config schemas
are read (v4 `rope_theta`/`rope_scaling`, v5 `rope_parameters`). The model is built
abstractly and filled one tensor at a time, so loading never holds two copies of it.
Missing, unexpected or mis-shaped tensors raise one `CheckpointMismatchError` listing them
all; unreadable directories or files raise `CheckpointError`; architectures fgjax cannot
represent raise `UnsupportedModelError` naming the supported ones.

`save(model, path, *, max_shard_bytes=5 GiB)` writes config.json (v4 schema) and safetensors
in the legacy key layout that every transformers version reads (weights and config only).

A whole training run (tokenizer, chat template and processor files included) exports with
`python -m fgjax.export` / `fgjax.hf.export.export_run` (fgjax/export.py describes it).

Lower level: `configs.from_hf(dict) -> (arch, cfg)` and `config_export.to_hf(cfg) -> dict` convert
configs; `keymaps` holds the per-architecture rules (fgjax path <-> HF key, with the tensor
transform each way); `io.Checkpoint` reads tensors lazily.
"""

from fgjax.hf.config_export import to_hf
from fgjax.hf.configs import UnsupportedModelError, from_hf
from fgjax.hf.io import CheckpointError
from fgjax.hf.loader import CheckpointMismatchError, load, save

__all__ = [
    "CheckpointError",
    "CheckpointMismatchError",
    "UnsupportedModelError",
    "from_hf",
    "load",
    "save",
    "to_hf",
]
