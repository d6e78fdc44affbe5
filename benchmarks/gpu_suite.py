"""The GPU benchmark suite: one table of fgjax's bf16 throughput and MFU on one GPU, in under
8 minutes on one H100/H200, with every figure checked against transformers first.

Rows (random weights throughout, nothing is downloaded: transformers makes them and
`fgjax.hf.load` reads them back, so both sides hold the same weights):
  (a) align       a LLaVA-1.5-7B step at its shape: CLIP ViT-L/14-336 (576 image tokens),
                  mlp2x_gelu projector, Vicuna-7B-shaped decoder with LLaVA's 32064 vocabulary,
                  rows of 2048 tokens, the projector trained with AdamW, remat full (as
                  LLaVA's own pretraining: gradient checkpointing; `--align_remat none,full`
                  adds a row without)
  (b) align_llm   projector and LLM trained with fp32 AdamW state: CLIP ViT-L/14-336 + the
                  Vicuna-7B-shaped decoder at the most layers whose training state fits the
                  GPU (`fit_depth`; every 6.7B+ preset needs more than one 141 GiB GPU), remat
                  none and full (`--llm_remat`). Same layer shapes as (a). A row whose batch
                  XLA's memory estimate says will not fit runs at the batch that does.
  ranking         likelihood ranking of the 102 Oxford Flowers class names at LLaVA shape:
                  fgjax's shared-prefix KV cache (inference.score_continuations) vs
                  transformers class by class after a cached prompt (VLMClassifier's way,
                  benchmarks/likelihood_scoring.py), images/s
  generation      greedy decoding with the KV cache (inference.greedy_generate) vs
                  transformers `generate`, new tokens/s (prefill included)
Every row gives ms per step (or call), tokens/s (training: rows x 2048 per second), achieved
TFLOP/s from fgjax.train.flops' analytic count (model FLOPs: remat's recomputation is not
counted) and MFU against the device's dense bf16 peak (flops.PEAK_FLOPS), XLA's memory
estimate of each step, and the row's wall time, compilation and checks included.

Agreement, checked before any fgjax timing (a row that disagrees is not timed and the suite
exits 1): the first step's loss equals transformers' loss on the same batch; class scores and
teacher-forced generation logits agree with transformers' (relative RMS difference) and
every argmax agrees, up to near-ties in bf16; in float32 (`--tiny`) generated tokens are
identical. Tolerances: FLOAT32 and BFLOAT16 below. The transformers reference runs first and
hands its GPU memory back before fgjax allocates; a row that would not fit the time budget
(`--budget_s`) is skipped and says so.

    python -m benchmarks.gpu_suite            # the real sizes, on a GPU
    python -m benchmarks.gpu_suite --tiny     # tiny shapes, float32, on the CPU (the test)
    options: --parts align,align_llm,ranking,generation  --budget_s 450  --peak_tflops X

Installing on a GPU machine (written without one; the wheel index is my best understanding,
check it): `pip install -e '.[test,cuda]'` gives jax[cuda12] and torch==2.13.0, which PyPI
ships for Linux x86-64 with CUDA. If `python -c "import torch; print(torch.cuda.is_available())"`
prints False (a CPU wheel was installed, as on this project's CPU machines), reinstall a CUDA
12 build: `pip install --force-reinstall torch==2.13.0 --index-url
https://download.pytorch.org/whl/cu128`. The run writes ~22 GB of weights under `--tmp`
(default: the system's temporary directory).
"""

from __future__ import annotations

import os

# Before JAX starts: allocate GPU memory on demand (not 75% up front), up to 92% of it. The
# transformers reference runs first in this process and returns its memory; fgjax then needs
# most of the GPU.
os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
os.environ.setdefault("XLA_PYTHON_CLIENT_MEM_FRACTION", "0.92")

import argparse  # noqa: E402
import dataclasses  # noqa: E402
import functools  # noqa: E402
import gc  # noqa: E402
import math  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import ml_collections  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
import transformers  # noqa: E402
from flax import nnx  # noqa: E402

from benchmarks.common import report, time_call  # noqa: E402
from benchmarks.likelihood_scoring import torch_scores  # noqa: E402
from fgjax import hf, models  # noqa: E402
from fgjax.data import classification  # noqa: E402
from fgjax.data.conversation import ConversationEncoder  # noqa: E402
from fgjax.data.templates import get_template  # noqa: E402
from fgjax.data.tokenizer_train import tiny_tokenizer  # noqa: E402
from fgjax.evaluate import inference, prompts  # noqa: E402
from fgjax.models.config import REMAT_POLICIES  # noqa: E402
from fgjax.train import experiment, flops, optim, schema, tasks, trainer  # noqa: E402

PARTS = ("align", "align_llm", "ranking", "generation")
COLUMNS = ("part", "implementation", "shape", "ms", "tokens/s", "images/s", "TFLOP/s", "MFU",
           "vs_transformers", "step_GiB", "wall_s", "agreement", "note")  # fmt: skip
GIB = 2**30


@dataclasses.dataclass(frozen=True)
class Shapes:
    """Every size of one run. Real: LLaVA-1.5-7B; tiny: seconds on a CPU."""

    encoder: str
    encoder_overrides: dict
    decoder: str
    decoder_overrides: dict
    vocab_from_tokenizer: bool  # tiny decoders take the tokenizer's vocabulary
    dtype: str  # compute dtype (and parameter dtype of the inference rows)
    seq: int  # tokens per training row
    align_batch: int
    llm_batch: int
    llm_depth: int | None  # None: the most layers that fit (fit_depth)
    rank_batch: int  # images per fgjax ranking call
    rank_torch_images: int  # images transformers scores (class by class is slow)
    gen_batch: int
    gen_tokens: int
    chunk_tokens: int
    warmup: int
    repeats: int


REAL = Shapes(
    encoder="clip_l336", encoder_overrides={}, decoder="vicuna7b_llava", decoder_overrides={},
    vocab_from_tokenizer=False, dtype="bfloat16", seq=2048, align_batch=8, llm_batch=8,
    llm_depth=None, rank_batch=8, rank_torch_images=2, gen_batch=8, gen_tokens=128,
    chunk_tokens=256, warmup=1, repeats=3,
)  # fmt: skip
TINY = Shapes(
    encoder="tiny_clip",
    encoder_overrides=dict(width=64, depth=2, num_heads=4, mlp_dim=128, image_size=32, patch_size=8),
    decoder="tiny_llama",
    decoder_overrides=dict(width=64, depth=2, num_heads=4, num_kv_heads=2, mlp_dim=128),
    vocab_from_tokenizer=True, dtype="float32", seq=48, align_batch=2, llm_batch=2, llm_depth=2,
    rank_batch=2, rank_torch_images=2, gen_batch=2, gen_tokens=8, chunk_tokens=256, warmup=1,
    repeats=2,
)  # fmt: skip


@dataclasses.dataclass(frozen=True)
class Tolerance:
    """How closely fgjax must agree with transformers on the same weights and inputs.

    rel_rms: RMS difference over the reference's RMS, of logits (centred over the vocabulary)
      and of class scores (centred over the classes of each image).
    loss_rel: |loss difference| / loss of the first training step.
    tie_sigmas: an argmax (top class, greedy token) may differ from transformers' only where
      fgjax scores transformers' choice within this many RMS differences of its own maximum.
    exact_tokens: greedy generation must produce identical tokens.
    """

    rel_rms: float
    loss_rel: float
    tie_sigmas: float
    exact_tokens: bool


# float32: both sides round at ~1e-7 relative in different orders; the project's parity tests
# see 1e-6 on logits (benchmarks/likelihood_scoring.py: 4e-6 on scores), so 1e-4 and 1e-5 keep
# 10-100x room, while a wrong weight, mask or shift moves them by 1e-2 or more. Ties need
# exact equality: identical top classes and tokens.
FLOAT32 = Tolerance(rel_rms=1e-4, loss_rel=1e-5, tie_sigmas=0.0, exact_tokens=True)
# bfloat16 keeps 8 significant bits (u = 2^-8 = 3.9e-3); ~15 roundings on the residual path of
# each of 24 + 32 blocks add in quadrature to ~sqrt(15 * 56) u = 0.11 relative RMS against
# float32 for the worst case, 0.16 between two bf16 implementations (tests/models/test_decoder.py
# measures 1e-2 for 2 layers); 0.25 keeps room, and a broken path gives order 1. The loss is a
# mean over ~10^4 tokens: per-token errors average out, leaving the ~1e-3 relative bias of
# rounding the logits; 5e-3. Random weights make near-ties common (the top two of 32k logits
# are ~0.3 apart), so an argmax may flip where the two candidates are within 6 sigma.
# (Derived, not measured: no GPU was available when this was written.)
BFLOAT16 = Tolerance(rel_rms=0.25, loss_rel=5e-3, tie_sigmas=6.0, exact_tokens=False)


# -- setup -----------------------------------------------------------------------------------


@dataclasses.dataclass
class Setup:
    shapes: Shapes
    tolerance: Tolerance
    class_names: list
    prompt: np.ndarray  # i32[P]: a LLaVA prompt holding the image tokens
    class_tokens: list  # C token lists
    image_token_id: int
    vocab: int | None
    llm_depth: int
    llm_estimate_gib: float | None


def train_config(s: Setup, stage: str, batch: int, remat: str, attention: str, depth=None):
    """The training config of a row (fgjax/train/schema.py fields); data is made here."""
    decoder = dict(s.shapes.decoder_overrides)
    if s.vocab is not None:
        decoder["vocab_size"] = s.vocab
    if depth is not None:
        decoder["depth"] = depth
    c = ml_collections.ConfigDict()
    c.task, c.seed, c.stage = "vlm", 0, stage
    c.model = dict(
        encoder=s.shapes.encoder, decoder=s.shapes.decoder, projector="mlp2x_gelu",
        image_token_id=s.image_token_id, encoder_overrides=dict(s.shapes.encoder_overrides),
        decoder_overrides=decoder, dtype=s.shapes.dtype, remat=remat, attention=attention,
    )  # fmt: skip
    c.optim = dict(lr=1e-5, warmup_steps=0, weight_decay=0.0, clip_norm=1.0)
    c.data = dict(max_length=s.shapes.seq)
    c.batch_size, c.grad_accum, c.num_steps = batch, 1, 100
    c.checkpoint = dict(every_steps=100)  # required by the checks; nothing is saved here
    c.mesh = {"data": -1}
    return c


def model_config(config):
    """The VLMConfig a training config builds (what both sides are made from)."""
    return tasks.get("vlm").model_config(schema.resolve(config))


def fit_depth(memory_bytes: float, s: Setup) -> tuple[int, float]:
    """(layers, estimated GiB): the deepest Vicuna-7B-shaped decoder whose align_llm training
    state fits 70% of `memory_bytes`, leaving the rest to the activations: a few GiB at batch
    8 x 2048 with remat full; remat none holds far more (compiled for the CPU: ~15 GiB a row
    for 14 layers besides the attention scores), so its row runs at the batch that fits.

    24 bytes per trained parameter: fp32 parameters, gradients and Adam's two moments (16), plus
    the step's temporaries (the updates, and the old parameters kept for the non-finite guard):
    the LLaVA-7B align_llm step compiles to 154 GiB for 7.06B parameters at batch 1
    (benchmarks/results/train_step_memory_llava7b.json), 23.4 bytes each. The frozen encoder
    holds 4 bytes per parameter; the logits, their softmax and gradient 12 bytes per entry.
    Compiled for the CPU (no GPU at hand), 14 layers at batch 8 x 2048 take 74 GiB with remat
    full (this estimate: 77 GiB) and 285 GiB without (XLA's CPU attention keeps the scores).
    """
    one = model_config(train_config(s, "align_llm", s.shapes.llm_batch, "full", "auto", depth=1))
    two = model_config(train_config(s, "align_llm", s.shapes.llm_batch, "full", "auto", depth=2))
    per_layer = models.param_count(two.decoder) - models.param_count(one.decoder)
    fixed_llm = models.param_count(one) - models.param_count(one.encoder) - per_layer
    logits = s.shapes.llm_batch * s.shapes.seq * one.decoder.vocab_size * 12
    fixed = 24 * fixed_llm + 4 * models.param_count(one.encoder) + logits
    max_depth = model_config(train_config(s, "align_llm", 1, "full", "auto")).decoder.depth
    depth = int(max(1, min(max_depth, (0.7 * memory_bytes - fixed) // (24 * per_layer))))
    return depth, (fixed + 24 * per_layer * depth) / GIB


def make_setup(shapes: Shapes, tolerance: Tolerance) -> Setup:
    class_names = classification.info("oxford_flowers102").class_names
    tok = tiny_tokenizer("bpe", vocab_size=1024, texts=[" ".join(class_names)] * 4)
    vocab = tok.vocab_size if shapes.vocab_from_tokenizer else None
    s = Setup(
        shapes, tolerance, class_names, None, None, tok.token_to_id("<image>"), vocab, 0, None
    )
    cfg = model_config(train_config(s, "align", 1, "none", "auto"))
    encoder = ConversationEncoder.for_model(tok, get_template("vicuna_v1").with_system(None), cfg)
    prompter = prompts.Prompter(encoder)
    s.prompt = prompter.prompt(prompts.QUESTION, lead_in=prompts.LEAD_IN)
    s.class_tokens = [prompter.continuation(name, prompts.LEAD_IN) for name in class_names]
    if shapes.llm_depth is not None:
        s.llm_depth = shapes.llm_depth
    else:
        s.llm_depth, s.llm_estimate_gib = fit_depth(device_memory() or 80 * GIB, s)
    return s


def device_memory() -> int | None:
    """Bytes JAX may allocate on the first device, or None (the CPU reports none)."""
    stats = jax.devices()[0].memory_stats()
    return int(stats["bytes_limit"]) if stats and "bytes_limit" in stats else None


def pixels(cfg, count: int, seed: int) -> np.ndarray:
    """f32[count, S, S, 3]: random normalized images."""
    size = cfg.encoder.resolution
    return np.random.default_rng(seed).normal(size=(count, size, size, 3)).astype(np.float32)


def train_batch(cfg, batch: int, seq: int, seed: int) -> dict:
    """A training batch: random text, the image tokens after BOS, loss on the text after the
    first 8 text tokens."""
    rng = np.random.default_rng(seed)
    n_img, image_id = cfg.num_image_tokens, cfg.image_token_id
    tokens = rng.integers(image_id + 1, cfg.decoder.vocab_size, (batch, seq)).astype(np.int32)
    tokens[:, 1 : 1 + n_img] = image_id
    loss_mask = np.zeros((batch, seq), bool)
    loss_mask[:, 1 + n_img + 8 :] = True
    return {"tokens": tokens, "loss_mask": loss_mask, "input_mask": np.ones_like(loss_mask),
            "images": pixels(cfg, batch, seed)}  # fmt: skip


# -- the transformers reference -----------------------------------------------------------------


def torch_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def torch_dtype(s: Setup):
    return getattr(torch, s.shapes.dtype)


def torch_model(cfg, s: Setup):
    """LlavaForConditionalGeneration of `cfg` with transformers' random initialization."""
    torch.manual_seed(0)
    with torch.device(torch_device()):
        model = transformers.LlavaForConditionalGeneration._from_config(
            transformers.LlavaConfig(**hf.to_hf(cfg)), dtype=torch_dtype(s)
        )
    return model.eval()


def to_torch_pixels(images: np.ndarray, s: Setup):
    nchw = torch.from_numpy(images.transpose(0, 3, 1, 2).copy())
    return nchw.to(torch_device(), torch_dtype(s))


def plant(model) -> None:
    """The testing aid behind --plant_disagreement: noise of the weights' own size on the LM
    head, so that every agreement check must fail."""
    with torch.no_grad():
        head = model.get_output_embeddings().weight
        head.add_(torch.randn_like(head) * head.float().std().to(head.dtype))


def torch_generate(model, ids, images, new_tokens: int, logits: bool = False):
    """Greedy `generate`: exactly `new_tokens` tokens (EOS disabled), and their logits."""
    model.generation_config.eos_token_id = None
    with torch.no_grad():
        out = model.generate(
            input_ids=ids, attention_mask=torch.ones_like(ids), pixel_values=images,
            max_new_tokens=new_tokens, do_sample=False, return_dict_in_generate=True,
            output_logits=logits,
        )  # fmt: skip
    tokens = out.sequences[:, ids.shape[1] :].cpu().numpy().astype(np.int32)
    if not logits:
        return tokens, None
    return tokens, torch.stack(out.logits, 1).float().cpu().numpy()


def torch_row_losses(model, batch: dict, s: Setup) -> tuple[np.ndarray, np.ndarray]:
    """Per row: transformers' mean next-token loss and the number of loss tokens."""
    losses, counts = [], []
    with torch.no_grad():
        for r in range(len(batch["tokens"])):
            ids = torch.from_numpy(batch["tokens"][r : r + 1].astype(np.int64)).to(torch_device())
            labels = torch.where(
                torch.from_numpy(batch["loss_mask"][r : r + 1]).to(ids.device), ids, -100
            )
            out = model(input_ids=ids, pixel_values=to_torch_pixels(batch["images"][r : r + 1], s),
                        attention_mask=torch.ones_like(ids), labels=labels)  # fmt: skip
            losses.append(float(out.loss))
            counts.append(int(batch["loss_mask"][r, 1:].sum()))
    return np.asarray(losses, np.float64), np.asarray(counts, np.float64)


def reference(s: Setup, parts, directory: str, plant_disagreement: bool) -> dict:
    """Runs every transformers part first, saves the weights fgjax will read, and frees the
    GPU: {"llava_dir", "llm_dir", "ranking", "generation", "align", "align_llm", ...}."""
    out = {}
    if {"align", "ranking", "generation"} & set(parts):
        cfg = model_config(train_config(s, "align", 1, "none", "auto"))
        model = torch_model(cfg, s)
        out["llava_dir"] = os.path.join(directory, "llava")
        model.save_pretrained(out["llava_dir"])
        out["attn_implementation"] = model.config._attn_implementation
        if plant_disagreement:
            plant(model)
        if "ranking" in parts:
            k = s.shapes.rank_torch_images
            images = to_torch_pixels(pixels(cfg, s.shapes.rank_batch, seed=1)[:k], s)
            torch_scores(model, s.prompt, images[:1], s.class_tokens[:2])  # warm-up
            start = time.perf_counter()
            scores = torch_scores(model, s.prompt, images, s.class_tokens)
            out["ranking"] = {"scores": scores, "seconds": time.perf_counter() - start, "images": k}
        if "generation" in parts:
            b, n = s.shapes.gen_batch, s.shapes.gen_tokens
            ids = torch.from_numpy(np.tile(s.prompt.astype(np.int64), (b, 1))).to(torch_device())
            images = to_torch_pixels(pixels(cfg, b, seed=2), s)
            tokens, logits = torch_generate(model, ids, images, n, logits=True)  # also warms up
            seconds = time_call(lambda: torch_generate(model, ids, images, n), warmup=0,
                                repeats=s.shapes.repeats)  # fmt: skip
            out["generation"] = {"tokens": tokens, "logits": logits, "seconds": seconds}
        if "align" in parts:
            batch = train_batch(cfg, s.shapes.align_batch, s.shapes.seq, seed=3)
            out["align"] = torch_row_losses(model, batch, s)
        del model
    if "align_llm" in parts:
        cfg = model_config(train_config(s, "align_llm", 1, "none", "auto", depth=s.llm_depth))
        model = torch_model(cfg, s)
        out["llm_dir"] = os.path.join(directory, "llm")
        model.save_pretrained(out["llm_dir"])
        if plant_disagreement:
            plant(model)
        batch = train_batch(cfg, s.shapes.llm_batch, s.shapes.seq, seed=4)
        out["align_llm"] = torch_row_losses(model, batch, s)
        del model
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()  # the memory goes back to the device, for JAX
    return out


# -- agreement --------------------------------------------------------------------------------


def _rms(x) -> float:
    return float(np.sqrt(np.mean(np.square(np.asarray(x, np.float64)))))


def check_scores(ours: np.ndarray, theirs: np.ndarray, tol: Tolerance) -> dict:
    """Class scores f32[k, C] of the same k images."""
    centred = lambda x: x - x.mean(axis=1, keepdims=True)
    rel = _rms(centred(ours) - centred(theirs)) / _rms(centred(theirs))
    margin = tol.tie_sigmas * _rms(ours - theirs)
    picked = np.take_along_axis(ours, theirs.argmax(1)[:, None], 1)[:, 0]
    ties_ok = bool(np.all(picked >= ours.max(1) - margin))
    return {
        "passed": bool(rel < tol.rel_rms and ties_ok),
        "summary": f"scores rel RMS {rel:.1e} (< {tol.rel_rms:g}), same top-1 "
        f"{int((ours.argmax(1) == theirs.argmax(1)).sum())}/{len(ours)}"
        + ("" if ties_ok else ", a top-1 differs beyond a near-tie"),
        "rel_rms": rel, "max_abs_diff": float(np.abs(ours - theirs).max()), "top1_ok": ties_ok,
    }  # fmt: skip


def check_generation(ours, theirs, forced, their_logits, tol: Tolerance) -> dict:
    """ours, theirs: greedy tokens i32[B, N]; forced: fgjax's logits f32[B, N, V] along
    transformers' tokens (teacher-forced); their_logits: transformers' logits f32[B, N, V]."""
    centred = lambda x: x - x.mean(axis=-1, keepdims=True)
    rel = _rms(centred(forced) - centred(their_logits)) / _rms(centred(their_logits))
    margin = tol.tie_sigmas * _rms(forced - their_logits)
    picked = np.take_along_axis(forced, theirs[..., None], -1)[..., 0]
    ties_ok = bool(np.all(picked >= forced.max(-1) - margin))
    same = ours == theirs
    prefix = np.where(same.all(1), same.shape[1], np.argmin(same, 1))
    identical = bool(same.all())
    passed = rel < tol.rel_rms and ties_ok and (identical or not tol.exact_tokens)
    return {
        "passed": bool(passed),
        "summary": f"logits rel RMS {rel:.1e} (< {tol.rel_rms:g}), identical tokens "
        f"{int(prefix.min())}-{int(prefix.max())} of {same.shape[1]} per row"
        + ("" if ties_ok else ", a transformers token is not fgjax's argmax (beyond a near-tie)"),
        "rel_rms": rel, "matching_prefix": prefix.tolist(), "identical": identical,
        "argmax_ok": ties_ok,
    }  # fmt: skip


def check_loss(ours: float, theirs: float, tol: Tolerance) -> dict:
    rel = abs(ours - theirs) / abs(theirs)
    return {
        "passed": bool(rel < tol.loss_rel),
        "summary": f"loss {ours:.5f} vs transformers {theirs:.5f} (rel {rel:.1e} < {tol.loss_rel:g})",
        "loss": ours, "transformers_loss": theirs, "rel_diff": rel,
    }  # fmt: skip


# -- fgjax ------------------------------------------------------------------------------------


def attentions() -> list[str]:
    """The attention implementations to try, best first: cuDNN's fused kernel on a GPU."""
    return ["cudnn", "xla"] if jax.default_backend() == "gpu" else ["auto"]


def with_attention(cfg, attention: str):
    return dataclasses.replace(
        cfg, encoder=dataclasses.replace(cfg.encoder, attention=attention),
        decoder=dataclasses.replace(cfg.decoder, attention=attention),
    )  # fmt: skip


def first_working(attempt, note: list):
    """attempt(attention) with the first implementation that compiles; failures go to `note`."""
    for attention in attentions():
        try:
            return attention, attempt(attention)
        except Exception as error:  # noqa: BLE001 -- cuDNN refuses some shapes; say why, try xla
            if attention == attentions()[-1]:
                raise
            note.append(f"{attention} failed ({str(error).splitlines()[0][:120]})")


@functools.partial(jax.jit, static_argnames=("graphdef",))
def forward_logits(graphdef, state, tokens, images):
    """f32[B, T, V]: one full forward (no cache)."""
    return nnx.merge(graphdef, state)(tokens, images).logits


def inference_flops(cfg, prompt_len: int, attended: list[float]) -> float:
    """Forward FLOPs of one image: the tower, the projector, the prompt (LM head at its last
    token only) and one more token per entry of `attended`, attending over that many keys
    (LM head at each)."""
    vision = flops.vlm_train_flops(cfg, 1, prompt_len, {})
    dec, head = cfg.decoder, 2 * cfg.decoder.width * cfg.decoder.vocab_size
    prompt = prompt_len * flops.stack_flops_per_token(dec, prompt_len / 2) + head
    rest = sum(flops.stack_flops_per_token(dec, a) + head for a in attended)
    return vision.encoder + vision.projector + prompt + rest


def ranking_rows(s: Setup, ref: dict, loaded, peak) -> list[dict]:
    cfg, state = loaded["cfg"], loaded["state"]
    b = s.shapes.rank_batch
    images = pixels(cfg, b, seed=1)
    tokens, mask = prompts.pad_prompts([s.prompt] * b, bucket=8)
    chunks = inference.pack_continuations(s.class_tokens, s.shapes.chunk_tokens)
    note = []

    def attempt(attention):
        gd = nnx.graphdef(models.abstract(with_attention(cfg, attention)))
        run = lambda: np.asarray(inference.score_continuations(
            gd, state, tokens, mask, images, chunks, num_classes=len(s.class_tokens)))  # fmt: skip
        return run, run()

    attention, (run, scores) = first_working(attempt, note)
    k = ref["ranking"]["images"]
    agreement = check_scores(scores[:k], ref["ranking"]["scores"], s.tolerance)
    lengths = [len(t) for t in s.class_tokens]
    per_image = inference_flops(
        cfg, len(s.prompt), [len(s.prompt) + o for t in lengths for o in range(t)]
    )
    shape = f"{b} images x {len(s.class_tokens)} classes, prompt {len(s.prompt)} tokens"
    torch_per_s = k / ref["ranking"]["seconds"]
    rows = [
        _row(
            "ranking",
            f"fgjax shared prefix, attention={attention}",
            shape,
            agreement=agreement,
            note="; ".join(note),
        ),
        _row(
            "ranking",
            f"transformers class by class ({ref['attn_implementation']})",
            f"{k} images x {len(s.class_tokens)} classes",
            ms=1e3 / torch_per_s,
            images_per_s=torch_per_s,
            flop_per_s=per_image * torch_per_s,
            peak=peak,
        ),
    ]
    if agreement["passed"]:
        seconds = time_call(run, warmup=s.shapes.warmup, repeats=s.shapes.repeats)
        _timed(rows[0], ms=seconds * 1e3, images_per_s=b / seconds,
               flop_per_s=per_image * b / seconds, peak=peak, vs=b / seconds / torch_per_s)  # fmt: skip
    return rows


def generation_rows(s: Setup, ref: dict, loaded, peak) -> list[dict]:
    cfg, state = loaded["cfg"], loaded["state"]
    b, n = s.shapes.gen_batch, s.shapes.gen_tokens
    images = pixels(cfg, b, seed=2)
    tokens, mask = prompts.pad_prompts([s.prompt] * b, bucket=8)
    stop = np.asarray([-1], np.int32)  # no token stops: every row decodes n tokens
    theirs = ref["generation"]["tokens"]
    forced_tokens = np.concatenate([np.tile(s.prompt, (b, 1)), theirs[:, :-1]], 1)
    p = len(s.prompt)
    note = []

    def attempt(attention):
        gd = nnx.graphdef(models.abstract(with_attention(cfg, attention)))
        run = lambda: np.asarray(
            inference.greedy_generate(gd, state, tokens, mask, images, stop, max_new_tokens=n)
        )
        forced = np.asarray(forward_logits(gd, state, forced_tokens, images))[:, p - 1 :]
        return run, run(), forced

    attention, (run, ours, forced) = first_working(attempt, note)
    agreement = check_generation(ours, theirs, forced, ref["generation"]["logits"], s.tolerance)
    per_row = inference_flops(cfg, p, [p + 1 + i for i in range(n - 1)])
    shape = f"batch {b}, prompt {p} tokens, {n} new tokens"
    torch_s = ref["generation"]["seconds"]
    rows = [
        _row(
            "generation",
            f"fgjax greedy_generate, attention={attention}",
            shape,
            agreement=agreement,
            note="; ".join(note),
        ),
        _row(
            "generation",
            f"transformers generate ({ref['attn_implementation']})",
            shape,
            ms=torch_s * 1e3,
            tokens_per_s=b * n / torch_s,
            flop_per_s=b * per_row / torch_s,
            peak=peak,
        ),
    ]
    if agreement["passed"]:
        seconds = time_call(run, warmup=s.shapes.warmup, repeats=s.shapes.repeats)
        _timed(rows[0], ms=seconds * 1e3, tokens_per_s=b * n / seconds,
               flop_per_s=b * per_row / seconds, peak=peak, vs=torch_s / seconds)  # fmt: skip
    return rows


def peak_bytes(compiled) -> int | None:
    m = compiled.memory_analysis()
    if m is None:
        return None
    return m.argument_size_in_bytes + m.output_size_in_bytes - m.alias_size_in_bytes + m.temp_size_in_bytes  # fmt: skip


def compile_fitting(s: Setup, stage, batch, remat, params, depth, note: list):
    """(experiment, compiled step, batch): the first attention implementation that compiles,
    at `batch` or, when XLA's memory estimate exceeds what the device has free, at the batch
    that estimate predicts to fit (memory linear in the batch past the arguments; one more
    compilation)."""
    free = None
    stats = jax.devices()[0].memory_stats()
    if stats and "bytes_limit" in stats:  # the parameters passed in become the step's arguments
        live = sum(x.nbytes for x in jax.tree.leaves(params))
        free = 0.95 * (stats["bytes_limit"] - (stats["bytes_in_use"] - live))

    def attempt(attention):
        build = lambda size: experiment.build(
            train_config(s, stage, size, remat, attention, depth=depth)
        )
        exp = build(batch)
        compiled = exp.compile()
        need = peak_bytes(compiled)
        if free is None or need is None or need <= free:
            return exp, compiled, batch
        fixed = compiled.memory_analysis().argument_size_in_bytes
        size = int((free - fixed) // ((need - fixed) / batch))
        if size < 1:
            raise MemoryError(f"batch 1 needs ~{(need - fixed) / batch / GIB + fixed / GIB:.0f} "
                              f"GiB, {free / GIB:.0f} GiB free")  # fmt: skip
        note.append(f"batch {batch} needs {need / GIB:.0f} GiB of {free / GIB:.0f}: batch {size}")
        exp = build(size)
        return exp, exp.compile(), size

    return first_working(attempt, note)


def train_row(s: Setup, part, stage, remat, load_params, ref_losses, peak, depth=None) -> dict:
    """One training-step row. load_params() -> the parameters (a pure dict, this row's own:
    the step donates them)."""
    full_batch = s.shapes.align_batch if stage == "align" else s.shapes.llm_batch
    params = load_params()
    note = []
    attention, (exp, compiled, batch) = compile_fitting(
        s, stage, full_batch, remat, params, depth, note
    )
    cfg = exp.model_cfg
    rows = train_batch(cfg, full_batch, s.shapes.seq, seed=3 if stage == "align" else 4)
    data = jax.device_put({k: v[:batch] for k, v in rows.items()}, exp.batch_sharding)
    state, frozen = trainer.fresh_state(exp, params)
    holder = {"state": state}
    del state, params

    def run():
        holder["state"], metrics = compiled(holder["state"], frozen, data)
        return float(metrics["loss"])  # blocks until the step is done

    losses, counts = ref_losses
    theirs = float((losses[:batch] * counts[:batch]).sum() / counts[:batch].sum())
    agreement = check_loss(run(), theirs, s.tolerance)  # the first step: the initial weights
    trained, _ = optim.split(exp.abstract_params, exp.path_groups, exp.flags)
    n_trained = sum(math.prod(x.shape) for x in jax.tree.leaves(trained))
    total = models.param_count(cfg)
    shape = (f"batch {batch} x {s.shapes.seq} ({cfg.num_image_tokens} image tokens), "
             f"{_count(total)} params, {_count(n_trained)} trained")  # fmt: skip
    if stage == "align_llm":
        shape += f", decoder {cfg.decoder.depth} layers of width {cfg.decoder.width}"
        if s.llm_estimate_gib is not None:
            shape += f" (fit_depth: {s.llm_estimate_gib:.0f} GiB state)"
    row = _row(part, f"fgjax remat={remat}, attention={attention}", shape, agreement=agreement,
               note="; ".join(note), step_gib=(peak_bytes(compiled) or 0) / GIB or None)  # fmt: skip
    if agreement["passed"]:
        seconds = time_call(run, warmup=s.shapes.warmup, repeats=s.shapes.repeats)
        step_flops = exp.task.step_flops(cfg, batch, s.shapes.seq, exp.flags)
        _timed(row, ms=seconds * 1e3, tokens_per_s=batch * s.shapes.seq / seconds,
               flop_per_s=step_flops / seconds, peak=peak)  # fmt: skip
    holder.clear()
    return row


# -- rows and the run ---------------------------------------------------------------------------


def _row(part, implementation, shape, *, agreement=None, note="", ms=None, tokens_per_s=None,
         images_per_s=None, flop_per_s=None, peak=None, step_gib=None) -> dict:  # fmt: skip
    row = dict.fromkeys(COLUMNS)
    row.update(part=part, implementation=implementation, shape=shape, step_GiB=step_gib,
               note=note, agreement="reference" if agreement is None else (
                   ("pass: " if agreement["passed"] else "FAIL: ") + agreement["summary"]))  # fmt: skip
    row["_agreement"] = agreement
    _timed(row, ms=ms, tokens_per_s=tokens_per_s, images_per_s=images_per_s,
           flop_per_s=flop_per_s, peak=peak)  # fmt: skip
    return row


def _timed(row, *, ms=None, tokens_per_s=None, images_per_s=None, flop_per_s=None, peak=None,
           vs=None) -> None:  # fmt: skip
    if ms is None:
        return
    row.update({"ms": ms, "tokens/s": tokens_per_s, "images/s": images_per_s, "vs_transformers": vs,
                "TFLOP/s": flop_per_s / 1e12, "MFU": flop_per_s / peak if peak else None})  # fmt: skip


def _skipped(part, implementation, why) -> dict:
    row = _row(part, implementation, "-", note=f"skipped: {why}")
    row["agreement"] = "-"
    return row


class Budget:
    """Skips rows that would not finish within `seconds` of the start (reserve: a row's cost)."""

    def __init__(self, seconds: float):
        self.start, self.seconds = time.perf_counter(), seconds

    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def allows(self, reserve: float) -> bool:
        return self.elapsed() + reserve <= self.seconds


# rough cost of each fgjax row on an H200, compile included (for the budget)
RESERVE_S = {"ranking": 45, "generation": 60, "align": 80, "align_llm": 70}


def check_devices() -> None:
    """Real sizes need a GPU on both sides: exits naming what is missing."""
    problems = []
    if jax.default_backend() == "cpu":
        problems.append("JAX sees no GPU (pip install -e '.[cuda]')")
    if not torch.cuda.is_available():
        problems.append("torch has no CUDA (the module docstring says how to install it)")
    if problems:
        raise SystemExit("benchmarks/gpu_suite.py at real sizes needs a GPU (or run --tiny): "
                         + "; ".join(problems))  # fmt: skip


def run(args) -> tuple[list[dict], dict]:
    if not args.tiny:
        check_devices()
    shapes = TINY if args.tiny else REAL
    if args.dtype:
        shapes = dataclasses.replace(shapes, dtype=args.dtype)
    tolerance = FLOAT32 if shapes.dtype == "float32" else BFLOAT16
    budget = Budget(args.budget_s)
    parts = [p for p in PARTS if p in args.parts.split(",")]
    if args.torch_threads:
        torch.set_num_threads(args.torch_threads)
    s = make_setup(shapes, tolerance)
    device = jax.devices()[0]
    peak = flops.peak_flops(
        device.device_kind, args.peak_tflops * 1e12 if args.peak_tflops else None
    )
    rows, phases = {}, {}
    with tempfile.TemporaryDirectory(dir=args.tmp) as directory:
        start = time.perf_counter()
        ref = reference(s, parts, directory, args.plant_disagreement)
        phases["transformers_s"] = time.perf_counter() - start
        dtype = shapes.dtype
        loaded = {}
        if {"ranking", "generation"} & set(parts):
            model, loaded["cfg"] = hf.load(ref["llava_dir"], dtype=dtype, compute_dtype=dtype)
            loaded["state"] = nnx.state(model, nnx.Param)
            del model
        for part, fn in (("ranking", ranking_rows), ("generation", generation_rows)):
            if part in parts:
                rows[part] = [
                    _guarded(part, fn, s, ref, loaded, peak)
                    if budget.allows(RESERVE_S[part])
                    else _skipped(part, "fgjax", f"time budget ({budget.elapsed():.0f} s used)")
                ]

        def llava_params():  # the same weights as float32 parameters, for training
            if "state" in loaded:  # from the inference copy, which is dropped
                return jax.tree.map(
                    lambda x: x.astype(jnp.float32), nnx.to_pure_dict(loaded.pop("state"))
                )
            return float32_params(ref["llava_dir"], dtype)

        def llm_params():
            return float32_params(ref["llm_dir"], dtype)

        for part, remats, params, depth in (
            ("align", args.align_remat, llava_params, None),
            ("align_llm", args.llm_remat, llm_params, s.llm_depth),
        ):
            if part not in parts:
                continue
            rows[part] = [
                _guarded(
                    part, train_row, s, part, part, remat, params, ref[part], peak, depth=depth
                )
                if budget.allows(RESERVE_S[part])
                else _skipped(
                    part, f"fgjax remat={remat}", f"time budget ({budget.elapsed():.0f} s used)"
                )
                for remat in remats.split(",")
            ]
            loaded.clear()  # the inference copy, if training did not take it
            gc.collect()
    phases["total_s"] = budget.elapsed()
    table = [row for part in PARTS for row in _flat(rows.get(part, []))]
    extra = {
        "tiny": args.tiny, "dtype": shapes.dtype, "shapes": dataclasses.asdict(shapes),
        "tolerance": dataclasses.asdict(tolerance), "device_kind": device.device_kind,
        "peak_flops": peak, "device_memory_bytes": device_memory(), "torch_device": torch_device(),
        "torch": torch.__version__, "transformers": transformers.__version__, "jax": jax.__version__,
        "llm_depth": s.llm_depth, "llm_estimate_gib": s.llm_estimate_gib, "phases": phases,
        "planted_disagreement": args.plant_disagreement,
        "agreement": [{"part": r["part"], "implementation": r["implementation"], **(r["_agreement"] or {})}
                      for r in table],
    }  # fmt: skip
    return table, extra


def float32_params(path: str, dtype: str) -> dict:
    """The parameters of a saved model as float32 (training keeps float32 parameters)."""
    model, _ = hf.load(path, dtype="float32", compute_dtype=dtype)
    return nnx.to_pure_dict(nnx.state(model, nnx.Param))


def _count(n: int) -> str:
    return f"{n / 1e9:.2f}B" if n >= 1e8 else f"{n / 1e6:.2f}M"


def _flat(rows):
    return [row for item in rows for row in (item if isinstance(item, list) else [item])]


def _guarded(part, fn, *args, **kwargs):
    """fn's rows, or one row naming the error (the suite goes on and exits 1); the first row
    gets the wall-clock seconds fgjax took, compilation and the checks included."""
    start = time.perf_counter()
    try:
        rows = fn(*args, **kwargs)
    except Exception as error:  # noqa: BLE001 -- one failing part must not hide the others
        rows = _row(part, "fgjax", "-", note=f"error: {type(error).__name__}: {str(error)[:300]}")
        rows["_agreement"] = {"passed": False, "summary": "error"}
        rows["agreement"] = "FAIL: error"
    (rows[0] if isinstance(rows, list) else rows)["wall_s"] = time.perf_counter() - start
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="tiny shapes, float32 (CPU, seconds)")
    parser.add_argument("--dtype", choices=["float32", "bfloat16"], default=None,
                        help="instead of the shapes' dtype (real: bfloat16, tiny: float32)")  # fmt: skip
    parser.add_argument(
        "--parts", default=",".join(PARTS), help="comma-separated subset of " + ",".join(PARTS)
    )
    parser.add_argument("--align_remat", default="full", help="remat policies of the align rows")
    parser.add_argument("--llm_remat", default="none,full", help="... of the align_llm rows")
    parser.add_argument(
        "--budget_s", type=float, default=450, help="skip rows that would end later"
    )
    parser.add_argument("--peak_tflops", type=float, default=None,
                        help="peak TFLOP/s of one device, where flops.PEAK_FLOPS lacks it")  # fmt: skip
    parser.add_argument("--torch_threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--tmp", default=None, help="where the weights are written (~20 GB real)")
    parser.add_argument("--plant_disagreement", action="store_true",
                        help="testing aid: perturb transformers' LM head after saving the weights")  # fmt: skip
    args = parser.parse_args(argv)
    unknown = set(args.parts.split(",")) - set(PARTS)
    if unknown:
        parser.error(f"--parts: unknown {sorted(unknown)}; choose from {','.join(PARTS)}")
    for flag in ("align_remat", "llm_remat"):
        unknown = set(getattr(args, flag).split(",")) - set(REMAT_POLICIES)
        if unknown:
            parser.error(f"--{flag}: unknown {sorted(unknown)}; choose from {REMAT_POLICIES}")
    table, extra = run(args)
    print(f"gpu_suite on {extra['device_kind']} ({'tiny shapes, ' if args.tiny else ''}{extra['dtype']}), "
          f"transformers on {extra['torch_device']}, {extra['phases']['total_s']:.0f} s")  # fmt: skip
    report("gpu_suite", [{k: v for k, v in r.items() if k != "_agreement"} for r in table], extra)
    failed = [r for r in table if r["_agreement"] is not None and not r["_agreement"]["passed"]]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
