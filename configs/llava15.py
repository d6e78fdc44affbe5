"""The LLaVA-1.5 recipe at real scale, with the study's ablations as arguments.

    python -m fgjax.main --config=configs/llava15.py:stage=pretrain,llm_frozen=False --workdir=runs/align_llm
    python -m fgjax.main --config=configs/llava15.py:stage=finetune,init=runs/align_llm --workdir=runs/ft

Arguments (defaults in brackets):
  stage       pretrain | finetune                                     [pretrain]
  encoder     clip_l336 | dfn_h378 | siglip_so400m384 | siglip2_so400m384 | dinov3_l16 |
              dinov2_siglip                                           [clip_l336]
  llm         vicuna7b | llama3_8b | qwen2_7b | qwen25_7b | qwen3_8b | gemma2b | gemma2_9b |
              gemma3_1b                                               [vicuna7b]
  llm_frozen  pretraining with the LLM frozen (LLaVA) or trained       [True]
  models      directory of HF checkpoints, one sub-directory per model, named as in
              HF_NAMES below                                          [~/models]
  data        directory holding LLaVA-Pretrain/blip_laion_cc_sbu_558k.json (+ images/) and
              llava_v1_5_mix665k.json with its image folders (coco, gqa, ocr_vqa, textvqa, vg)
                                                                      [~/data/llava]
  init        finetune only: the pretraining run's workdir             [runs/pretrain]
  steps       override the number of steps (0 = one epoch)            [0]
  loss_tokens run the LM head only at each row's first K loss positions (0 = every position;
              a row with more stops the run with a message). A 256K vocabulary's logits at
              every position take most of the memory: Gemma 2 9B fits v5p-32 with 64 [0]
  batch       override the global batch                               [0]

Recipe: stage 1 trains the projector (and the LLM when llm_frozen=False) on 558K captions with
the plain template, lr 1e-3, batch 256; stage 2 trains projector + LLM on the 665K mix with the
LLM's chat template, lr 2e-5, batch 128. One epoch, AdamW without weight decay, 3% warmup then
cosine, gradient clipping 1.0, max length 2048, bf16 compute with fp32 master weights, letterbox
images (pad to square with the mean colour).
"""

import ml_collections

from fgjax.config_utils import parse_arg

HF_NAMES = {
    "clip_l336": "clip-vit-large-patch14-336",
    "dfn_h378": "DFN5B-CLIP-ViT-H-14-378",
    "siglip_so400m384": "siglip-so400m-patch14-384",
    "siglip2_so400m384": "siglip2-so400m-patch14-384",
    "dinov3_l16": "dinov3-vitl16-pretrain-lvd1689m",
    "dinov2_siglip": ("dinov2-with-registers-large", "siglip-so400m-patch14-224"),
    "vicuna7b": "vicuna-7b-v1.5",
    "llama3_8b": "Meta-Llama-3-8B",
    "qwen2_7b": "Qwen2-7B",
    "qwen25_7b": "Qwen2.5-7B-Instruct",
    "qwen3_8b": "Qwen3-8B",
    "gemma2b": "gemma-2b",
    "gemma2_9b": "gemma-2-9b-it",
    "gemma3_1b": "gemma-3-1b-it",  # Gemma 3's only text-only checkpoint; 4B+ are VLMs
}
DECODER_PRESETS = {
    "vicuna7b": "vicuna7b_llava",
    "llama3_8b": "llama3_8b",
    "qwen2_7b": "qwen2_7b",
    "qwen25_7b": "qwen25_7b",
    "qwen3_8b": "qwen3_8b",
    "gemma2b": "gemma2b",
    "gemma2_9b": "gemma2_9b",
    "gemma3_1b": "gemma3_1b",
}
TEMPLATES = {
    "vicuna7b": "vicuna_v1",
    "llama3_8b": "vicuna_v1",
    "qwen2_7b": "chatml",
    "qwen25_7b": "chatml",
    "qwen3_8b": "chatml",
    "gemma2b": "gemma",
    "gemma2_9b": "gemma",
    "gemma3_1b": "gemma",
}
ENCODERS = [name for name in HF_NAMES if name not in DECODER_PRESETS]
DATASET_SIZES = {"pretrain": 558_128, "finetune": 665_298}


def get_config(arg=None):
    a = parse_arg(
        arg, stage="pretrain", encoder="clip_l336", llm="vicuna7b", llm_frozen=True, models="~/models",
        data="~/data/llava", init="runs/pretrain", steps=0, batch=0, loss_tokens=0,
    )  # fmt: skip
    if a.stage not in DATASET_SIZES:
        raise ValueError(f"stage={a.stage!r}; use 'pretrain' or 'finetune'")
    if a.llm not in DECODER_PRESETS:
        raise ValueError(f"llm={a.llm!r}; use one of {sorted(DECODER_PRESETS)}")
    if a.encoder not in ENCODERS:
        raise ValueError(f"encoder={a.encoder!r}; use one of {', '.join(ENCODERS)}")
    pretrain = a.stage == "pretrain"
    models, data = a.models.rstrip("/"), a.data.rstrip("/")

    c = ml_collections.ConfigDict()
    c.job, c.task, c.seed = "train", "vlm", 0
    c.model = dict(
        encoder=a.encoder,
        decoder=DECODER_PRESETS[a.llm],
        projector="mlp2x_gelu",
        image_layout="inline",
        dtype="bfloat16",
        remat="full",
        vocab_multiple=64,  # grow the vocabulary to fit <image>/<pad>, padded as LLaVA does
    )
    llm_dir = f"{models}/{HF_NAMES[a.llm]}"
    if pretrain:
        encoder_dirs = HF_NAMES[a.encoder]
        c.init = {"decoder": f"hf:{llm_dir}"}
        if isinstance(encoder_dirs, tuple):  # fused towers load one by one
            c.init.update(
                {f"encoder/towers/{i}": f"hf:{models}/{d}" for i, d in enumerate(encoder_dirs)}
            )
        else:
            c.init["encoder"] = f"hf:{models}/{encoder_dirs}"
        c.stage = "align" if a.llm_frozen else "align_llm"
    else:
        c.init = {"vlm": f"run:{a.init}"}
        c.stage = "finetune"

    c.data = dict(
        sources=[
            {
                "name": "llava_json",
                "path": f"{data}/LLaVA-Pretrain/blip_laion_cc_sbu_558k.json",
                "image_root": f"{data}/LLaVA-Pretrain/images",
            }
            if pretrain
            else {
                "name": "llava_json",
                "path": f"{data}/llava_v1_5_mix665k.json",
                "image_root": data,
            }
        ],
        tokenizer=llm_dir,
        template="plain" if pretrain else TEMPLATES[a.llm],
        max_length=2048,
        preprocess="letterbox",
    )
    if a.loss_tokens:
        c.loss_tokens_per_row = a.loss_tokens
    c.batch_size = a.batch or (256 if pretrain else 128)
    c.grad_accum = 1
    c.num_steps = a.steps or DATASET_SIZES[a.stage] // c.batch_size
    c.optim = dict(
        lr=1e-3 if pretrain else 2e-5, warmup_ratio=0.03, schedule="cosine", weight_decay=0.0, clip_norm=1.0,
        b1=0.9, b2=0.999,
    )  # fmt: skip
    c.mesh = {"data": 1, "fsdp": -1, "tensor": 1}
    c.checkpoint = dict(every_steps=500, keep=2, asynchronous=True)
    c.log_every = 10
    return c
