"""A one-minute smoke job: build a tiny VLM, run a forward pass, print shapes and the
parameter counts of the real-size presets (from shapes only, no memory allocated).

    python -m fgjax.smoke
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from fgjax import models
from fgjax.models import presets

REAL_PRESETS = {
    "LLaVA-1.5-7B (CLIP L/14-336 + Vicuna-7B)": presets.llava15_7b,
    "CLIP ViT-L/14-336": lambda: presets.encoder("clip_l336"),
    "SigLIP So400m/14-384": lambda: presets.encoder("siglip_so400m384"),
    "DINOv2 L/14 + 4 registers": lambda: presets.encoder("dinov2_l14_reg4"),
    "DINOv3 ViT-L/16 (4 registers, RoPE)": lambda: presets.encoder("dinov3_l16"),
    "DFN-CLIP ViT-H/14-378": lambda: presets.encoder("dfn_h378"),
    "Llama-3-8B": lambda: presets.decoder("llama3_8b"),
    "Qwen2-7B": lambda: presets.decoder("qwen2_7b"),
    "Gemma-2B": lambda: presets.decoder("gemma2b"),
}


def main() -> None:
    cfg = presets.vlm("tiny_clip", "tiny_llama", "mlp2x_gelu")
    model = models.build(cfg)
    n_img = cfg.num_image_tokens
    text = np.random.RandomState(0).randint(3, cfg.image_token_id, (2, 12))
    tokens = np.concatenate(
        [text[:, :2], np.full((2, n_img), cfg.image_token_id), text[:, 2:]], axis=1
    )
    images = jax.random.normal(
        jax.random.key(0), (2, cfg.encoder.resolution, cfg.encoder.resolution, 3)
    )

    forward = nnx.jit(lambda m, t, im: m(t, im))
    out = forward(model, jnp.asarray(tokens, jnp.int32), images)
    print(f"tiny VLM: {models.param_count(cfg):,} parameters")
    print(f"  images {tuple(images.shape)} -> {n_img} image tokens per image")
    print(f"  tokens {tokens.shape} -> logits {tuple(out.logits.shape)} {out.logits.dtype}")
    print("real-size presets (parameter counts from jax.eval_shape):")
    for name, make in REAL_PRESETS.items():
        print(f"  {name:45s} {models.param_count(make()):>15,}")


if __name__ == "__main__":
    main()
