"""Instruction tuning of a published VLM of another family (Gemma 3, PaliGemma 2, Qwen2.5-VL,
InternVL 3) on the LLaVA-1.5 665K mix, as configs/llava15.py's stage 2 does for LLaVA.

    python -m fgjax.main --config=configs/finetune_vlm.py:vlm=gemma3_12b --workdir=gs://b/runs/g3
    python -m fgjax.fit --config=configs/finetune_vlm.py:vlm=gemma3_12b --topology=v5p-32
    python -m fgjax.fit --config=configs/finetune_vlm.py:vlm=qwen25vl_7b --topology=v5p-32

Arguments (defaults in brackets):
  vlm          gemma3_4b | gemma3_12b | gemma3_27b | paligemma2_224 | paligemma2_448 |
               qwen25vl_3b | qwen25vl_7b | internvl3_1b | internvl3_8b                [gemma3_4b]
  models       directory of HF checkpoints, one sub-directory per model (HF_NAMES)  [~/models]
  data         directory holding llava_v1_5_mix665k.json and its image folders  [~/data/llava]
  steps, batch override the number of steps (0 = one epoch) and the global batch   [0, 0]
  loss_tokens  the LM head only at each row's first K loss positions (0 = all)         [0]
  image_size   Qwen2.5-VL: the size every image is resized to (px, a multiple of 28)  [448]

Recipe: the whole VLM loaded from its HF checkpoint, projector + LLM trained (tower frozen) with
the family's own prompt format, lr 2e-5, batch 128, one epoch, AdamW without weight decay, 3%
warmup then cosine, clipping 1.0, 2048 tokens, bf16 compute with fp32 master weights, remat.
Qwen2.5-VL trains at one image size (448 x 448: 256 image tokens; the tower frozen, its patch
merger trained as the projector), in ChatML with its <|vision_start|> ... <|vision_end|> images.
InternVL 3 trains with each image one 448 px tile (squashed, as InternVLProcessor with
max_patches=1: 256 image tokens between <img> and </img>), in ChatML without a system message
(its published chat template).
"""

import ml_collections

from fgjax.config_utils import parse_arg

HF_NAMES = {
    "gemma3_4b": "gemma-3-4b-it",
    "gemma3_12b": "gemma-3-12b-it",
    "gemma3_27b": "gemma-3-27b-it",
    "paligemma2_224": "paligemma2-3b-pt-224",
    "paligemma2_448": "paligemma2-3b-pt-448",
    "qwen25vl_3b": "Qwen2.5-VL-3B-Instruct",
    "qwen25vl_7b": "Qwen2.5-VL-7B-Instruct",
    "internvl3_1b": "InternVL3-1B-hf",
    "internvl3_8b": "InternVL3-8B-hf",
}
FAMILY_TEMPLATES = (
    ("paligemma", "paligemma"),
    ("qwen", "chatml"),
    ("gemma", "gemma"),
    ("internvl", "chatml"),
)
TEMPLATES = {
    name: next(template for family, template in FAMILY_TEMPLATES if name.startswith(family))
    for name in HF_NAMES
}
DATASET_SIZE = 665_298


def get_config(arg=None):
    a = parse_arg(
        arg, vlm="gemma3_4b", models="~/models", data="~/data/llava", steps=0, batch=0,
        loss_tokens=0, image_size=448,
    )  # fmt: skip
    if a.vlm not in HF_NAMES:
        raise ValueError(f"vlm={a.vlm!r}; use one of {', '.join(HF_NAMES)}")
    models, data = a.models.rstrip("/"), a.data.rstrip("/")
    model_dir = f"{models}/{HF_NAMES[a.vlm]}"

    c = ml_collections.ConfigDict()
    c.job, c.task, c.seed, c.stage = "train", "vlm", 0, "finetune"
    c.model = dict(vlm=a.vlm, dtype="bfloat16", remat="full")
    if a.vlm.startswith("qwen"):
        c.model["encoder_overrides"] = {"fixed_size": a.image_size}
    c.init = {"vlm": f"hf:{model_dir}"}
    c.data = dict(
        sources=[{"name": "llava_json", "path": f"{data}/llava_v1_5_mix665k.json",
                  "image_root": data}],
        tokenizer=model_dir,
        template=TEMPLATES[a.vlm],
        max_length=2048,
    )  # fmt: skip
    if a.vlm.startswith("internvl"):
        c.data["system"] = None  # InternVL's chat template has none
    if a.loss_tokens:
        c.loss_tokens_per_row = a.loss_tokens
    c.batch_size = a.batch or 128
    c.grad_accum = 1
    c.num_steps = a.steps or DATASET_SIZE // c.batch_size
    c.optim = dict(
        lr=2e-5, warmup_ratio=0.03, schedule="cosine", weight_decay=0.0, clip_norm=1.0, b1=0.9,
        b2=0.999,
    )  # fmt: skip
    c.mesh = {"data": 1, "fsdp": -1, "tensor": 1}
    c.checkpoint = dict(every_steps=500, keep=2, asynchronous=True)
    c.log_every = 10
    return c
