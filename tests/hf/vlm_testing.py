"""Shared pieces of the Gemma 3 and PaliGemma VLM parity tests: real photographs, and the
transformers references for greedy generation and likelihood ranking."""

from __future__ import annotations

import numpy as np
import torch
import transformers as tf
from sklearn.datasets import load_sample_images


def photos() -> list[np.ndarray]:
    """Two real photographs of different sizes (uint8 HWC): scikit-learn's 427 x 640 "china"
    and a 200 x 300 crop of its "flower"."""
    china, flower = load_sample_images().images
    return [china, flower[100:300, 150:450]]


def nchw_to_nhwc(pixels) -> np.ndarray:
    """A processor's pixel_values f32[N, C, H, W] -> fgjax's f32[N, H, W, C]."""
    return np.ascontiguousarray(np.asarray(pixels).transpose(0, 2, 3, 1))


def hf_generate(model, steps: int, **inputs) -> np.ndarray:
    """i32[B, steps]: transformers' greedy continuation (no sampling, no EOS stop)."""
    settings = tf.GenerationConfig(
        max_new_tokens=steps, do_sample=False, eos_token_id=None, pad_token_id=0
    )
    with torch.no_grad():
        out = model.generate(**inputs, generation_config=settings)
    return out[:, inputs["input_ids"].shape[1] :].numpy()


def hf_class_log_likelihoods(model, prompts, pixel_rows, classes, extra) -> np.ndarray:
    """f32[B, C]: for each prompt (i32 array, with its row's pixel_values) and class (token
    list), the summed log-probs of the class tokens after the prompt, from one full forward
    of prompt + class. extra(ids i64[1, T], prompt_length) -> other model inputs
    (token_type_ids)."""
    scores = np.zeros((len(prompts), len(classes)))
    for row, (prompt, pixels) in enumerate(zip(prompts, pixel_rows)):
        for c, continuation in enumerate(classes):
            ids = torch.from_numpy(np.concatenate([prompt, continuation]).astype(np.int64))[None]
            with torch.no_grad():
                logits = model(input_ids=ids, pixel_values=pixels, **extra(ids, len(prompt)))
            logp = torch.log_softmax(logits.logits[0].double(), dim=-1)
            positions = range(len(prompt), ids.shape[1])
            scores[row, c] = sum(float(logp[t - 1, ids[0, t]]) for t in positions)
    return scores
