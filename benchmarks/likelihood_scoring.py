"""Images/s of likelihood ranking over the 102 Oxford Flowers class names, three ways, on one
small LLaVA-architecture model (CLIP tower + Llama decoder, random weights) on this CPU:

  shared prefix   fgjax.evaluate.inference.score_continuations: each image's prompt runs once
                  into a KV cache, all 102 class names are packed into chunks scored against it
                  (a batch of images at once)
  naive fgjax     inference.full_sequence_class_scores: one full forward of the model, image and
                  prompt + class name, per class (the batch of images at once, no cache); and
                  the same with each image encoded once (a smarter loop, for comparison)
  transformers    LlavaForConditionalGeneration in PyTorch, scored the way VLMClassifier
                  (Zhang et al. 2024) does: the prompt runs once per image into a KV cache, then
                  each class name is fed one at a time after it (cache cropped back each time)

The same weights throughout (fgjax.hf.save -> transformers), the same prompt, class tokens and
pixels; the summed log-probs and the predicted classes are checked to agree before timing.

    python -m benchmarks.likelihood_scoring [--batch 8] [--repeats 3] [--shapes small,llava]

At two shapes: the tiny tower's 16 image tokens, and LLaVA-1.5's 576. Beside each speed-up
over naive scoring, the token-count bound it is a fraction of: naive runs the prompt and a
class name once per class (102 times), shared prefix the prompt once and each class token once
(image encoding not counted), so bound = (C * P + sum of class tokens) / (P + sum), P
counting the image tokens.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

import jax
import numpy as np
import torch
import transformers
from flax import nnx

from benchmarks.common import report
from fgjax import hf, models
from fgjax.data import classification
from fgjax.data.conversation import ConversationEncoder
from fgjax.data.templates import get_template
from fgjax.data.tokenizer_train import tiny_tokenizer
from fgjax.evaluate import inference, prompts
from fgjax.models import presets

# image size and patch of the tiny tower: 16 image tokens, or LLaVA-1.5's 576 (336 px / 14)
SHAPES = {"small": (64, 16), "llava": (336, 14)}


def build(class_names, shape: str = "small"):
    image_size, patch = SHAPES[shape]
    tok = tiny_tokenizer("bpe", vocab_size=1024, texts=[" ".join(class_names)] * 4)
    cfg = presets.vlm(
        "tiny_clip", "tiny_llama", "mlp2x_gelu",
        image_token_id=tok.token_to_id("<image>"),
        encoder_overrides=dict(width=128, depth=4, num_heads=4, mlp_dim=512,
                               image_size=image_size, patch_size=patch),
        decoder_overrides=dict(vocab_size=tok.vocab_size, width=256, depth=4, num_heads=8,
                               num_kv_heads=4, mlp_dim=768),
    )  # fmt: skip
    model = models.build(cfg, seed=0)
    encoder = ConversationEncoder.for_model(tok, get_template("vicuna_v1").with_system(None), cfg)
    return tok, cfg, model, encoder


def torch_scores(llava, prompt, pixels, class_tokens) -> np.ndarray:
    """f32[B, C] the VLMClassifier way: per image the prompt into a cache, then class by class.
    Runs on the device of `pixels` (torch [B, 3, S, S]); log-probs in float32 whatever the
    model's dtype."""
    out = np.zeros((len(pixels), len(class_tokens)), np.float32)
    ids = torch.from_numpy(prompt[None].astype(np.int64)).to(pixels.device)
    with torch.no_grad():
        for row, image in enumerate(pixels):
            pre = llava(input_ids=ids, pixel_values=image[None], use_cache=True)
            cache, first = pre.cache, torch.log_softmax(pre.logits[0, -1].float(), -1)
            for c, tokens in enumerate(class_tokens):
                cont = torch.tensor([tokens], device=pixels.device)
                logits = llava(input_ids=cont, cache=cache, use_cache=True).logits[0].float()
                logp = torch.log_softmax(logits[:-1], -1)
                steps = torch.arange(len(tokens) - 1, device=pixels.device)
                total = first[tokens[0]] + logp[steps, cont[0, 1:]].sum()
                out[row, c] = float(total)
                cache.crop(-len(tokens))  # back to the prompt alone
    return out


def timed(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def measure(shape: str, args, class_names) -> tuple[list[dict], dict]:
    """Rows (shared prefix, naive, transformers) and the agreement and bound at one shape."""
    tok, cfg, model, encoder = build(class_names, shape)
    prompter = prompts.Prompter(encoder)
    prompt = prompter.prompt(prompts.QUESTION, lead_in=prompts.LEAD_IN)
    class_tokens = [prompter.continuation(name, prompts.LEAD_IN) for name in class_names]
    size = cfg.encoder.resolution
    pixels = np.random.default_rng(0).normal(size=(args.batch, size, size, 3)).astype(np.float32)
    graphdef, state = nnx.split(model)
    tokens, mask = prompts.pad_prompts([prompt] * args.batch, bucket=8)
    chunk = inference.fitted_chunk_tokens(class_tokens, args.chunk_tokens)
    chunks = inference.pack_continuations(class_tokens, chunk)

    def shared():
        return np.asarray(inference.score_continuations(
            graphdef, state, tokens, mask, pixels, chunks, num_classes=len(class_tokens)))  # fmt: skip

    def naive():
        return inference.full_sequence_class_scores(
            graphdef, state, [prompt] * args.batch, pixels, class_tokens, encode_per_class=True
        )

    def naive_encoded_once():
        return inference.full_sequence_class_scores(
            graphdef, state, [prompt] * args.batch, pixels, class_tokens
        )

    with tempfile.TemporaryDirectory() as directory:
        hf.save(model, directory)
        llava = transformers.LlavaForConditionalGeneration.from_pretrained(directory).eval()
    torch_pixels = torch.from_numpy(pixels.transpose(0, 3, 1, 2).copy())

    def reference():
        return torch_scores(llava, prompt, torch_pixels, class_tokens)

    # agreement first (these calls also compile)
    ours, slow, once, theirs = shared(), naive(), naive_encoded_once(), reference()
    agreement = {
        "max_abs_diff_vs_naive": float(np.abs(ours - slow).max()),
        "max_abs_diff_vs_naive_encoded_once": float(np.abs(ours - once).max()),
        "max_abs_diff_vs_transformers": float(np.abs(ours - theirs).max()),
        "same_top1_vs_naive": bool((ours.argmax(1) == slow.argmax(1)).all()),
        "same_top1_vs_transformers": bool((ours.argmax(1) == theirs.argmax(1)).all()),
    }
    assert agreement["same_top1_vs_naive"] and agreement["same_top1_vs_transformers"], agreement
    assert agreement["max_abs_diff_vs_transformers"] < 1e-3, agreement
    assert agreement["max_abs_diff_vs_naive_encoded_once"] < 1e-3, agreement

    rows = []
    for name, fn, repeats in (
        ("fgjax shared prefix", shared, args.repeats),
        ("fgjax naive per class (the whole model per class)", naive, args.slow_repeats),
        ("fgjax naive per class, each image encoded once", naive_encoded_once, args.slow_repeats),
        ("transformers LLaVA, cached prefix, class by class", reference, args.slow_repeats),
    ):
        seconds = timed(fn, repeats)
        rows.append({"shape": shape, "method": name, "images_per_s": args.batch / seconds,
                     "s_per_batch": seconds})  # fmt: skip
    base = rows[0]["images_per_s"]
    for row in rows:
        row["shared_prefix_speedup"] = base / row["images_per_s"]
    # the token-count bound: naive runs prompt (image tokens included) + class once per class,
    # shared prefix the prompt once and every class token once; image encoding not counted
    prompt_len, class_total = int(len(prompt)), sum(len(t) for t in class_tokens)
    bound = (len(class_tokens) * prompt_len + class_total) / (prompt_len + class_total)
    rows[1]["token_bound"] = bound
    rows[1]["fraction_of_bound"] = rows[1]["shared_prefix_speedup"] / bound
    info = {
        "prompt_tokens": prompt_len,
        "image_tokens": cfg.num_image_tokens,
        "class_tokens": {"min": min(map(len, class_tokens)), "max": max(map(len, class_tokens)),
                         "total": class_total},  # fmt: skip
        "chunks": list(chunks.tokens.shape),
        "token_bound": bound,
        "params": models.param_count(cfg),
        **agreement,
    }
    return rows, info


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--batch", type=int, default=8, help="images per fgjax call")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--slow_repeats", type=int, default=1, help="for naive and transformers")
    parser.add_argument("--chunk_tokens", type=int, default=256, help="at most, per chunk row")
    parser.add_argument("--shapes", default="small,llava", help=f"of {sorted(SHAPES)}")
    parser.add_argument(
        "--torch_threads", type=int, default=1,
        help="PyTorch intra-op threads; on a shared 2-core machine 2 threads spin against other "
        "processes and run each call 10-50x slower than 1",
    )  # fmt: skip
    args = parser.parse_args()
    torch.set_num_threads(args.torch_threads)

    class_names = classification.info("oxford_flowers102").class_names
    rows, shapes = [], {}
    for shape in args.shapes.split(","):
        shape_rows, shapes[shape] = measure(shape, args, class_names)
        rows += shape_rows
    report(
        "likelihood_scoring",
        rows,
        {
            "classes": len(class_names),
            "batch": args.batch,
            "shapes": shapes,
            "torch_threads": torch.get_num_threads(),
            "load_average": list(os.getloadavg()),
            "jax": jax.__version__,
            "transformers": transformers.__version__,
        },
    )


if __name__ == "__main__":
    main()
