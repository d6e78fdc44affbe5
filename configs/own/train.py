"""Train a VLM on your own labelled images, in LLaVA's two stages: the starting config.

    python -m fgjax.main --config=configs/own/train.py:stage=align,folder=DIR,tokenizer=TOK --workdir=runs/align
    python -m fgjax.main --config=configs/own/train.py:stage=instruct,folder=DIR,tokenizer=TOK,init=run:runs/align --workdir=runs/instruct

Your data, either of:
  folder=DIR      one folder of images per class, named after the class (DIR/oak leaf/1.jpg):
                  stage align trains on captions "a photo of a <class>." (`caption=`), stage
                  instruct on "What type of object is in this photo?" -> "<class>" and on
                  lettered five-way multiple choice (fgjax/data/folder_source.py)
  json=FILE       a LLaVA-format JSON/JSONL file (558K-style captions for align, 665K-style
                  conversations for instruct), with images=DIR their root
tokenizer=PATH    a tokenizer.json (with tokenizer_config.json beside it declaring bos/eos, or
                  `roles`), a sentencepiece model, or a Hugging Face model directory

The model: encoder and llm are presets of fgjax/models/presets.py; the defaults are tiny and
random (a laptop run in minutes). For real towers name the preset and its weights:
encoder=clip_l336,encoder_weights=hf:/models/clip-vit-large-patch14-336 and
llm=vicuna7b,llm_weights=hf:/models/vicuna-7b-v1.5 (the preset must be the checkpoint's).
llm_frozen: the align stage trains the projector only (LLaVA's recipe, for a pretrained LLM);
the default trains the tiny random LLM too.

Other arguments: steps, batch, lr, max_length, image_size (tiny towers), preprocess
("letterbox" as LLaVA-1.5 pads non-square images; evaluation and export inherit it), seed.
Every key of the result is a field of fgjax/train/schema.py.
"""

import ml_collections

from fgjax.config_utils import parse_arg


def get_config(arg=None):
    a = parse_arg(
        arg, stage="align", folder="", json="", images="", tokenizer="", init="",
        encoder="tiny_clip", encoder_weights="", llm="tiny_llama", llm_weights="",
        llm_frozen=False, steps=200, batch=16, lr=0.0, max_length=128, image_size=32,
        preprocess="letterbox", caption="a photo of a {}.", seed=0,
    )  # fmt: skip
    if a.stage not in ("align", "instruct"):
        raise ValueError(f"stage={a.stage!r}; use 'align' or 'instruct'")
    if bool(a.folder) == bool(a.json):
        raise ValueError("give your data as folder=DIR (a folder per class) or json=FILE (LLaVA format)")
    if not a.tokenizer:
        raise ValueError("give tokenizer=PATH: a tokenizer.json, sentencepiece model or HF model directory")
    align = a.stage == "align"

    c = ml_collections.ConfigDict()
    c.job, c.task, c.seed = "train", "vlm", a.seed
    # align: the projector (and a random LLM); instruct: projector and LLM, the tower frozen
    c.stage = ("align" if a.llm_frozen else "align_llm") if align else "finetune"
    tiny = a.encoder.startswith("tiny")
    c.model = dict(
        encoder=a.encoder,
        decoder=a.llm,
        projector="mlp2x_gelu",  # LLaVA-1.5's
        encoder_overrides={"image_size": a.image_size} if tiny else {},
        vocab_multiple=64,  # the decoder's vocabulary grows to hold your tokenizer's ids
    )
    # where the weights come from: stage 1 from the towers, stage 2 from stage 1's run
    if align:
        c.init = {k: v for k, v in (("encoder", a.encoder_weights), ("decoder", a.llm_weights)) if v}
    else:
        if not a.init:
            raise ValueError("stage=instruct starts from the align run: give init=run:ALIGN_WORKDIR")
        c.init = {"vlm": a.init}
    if a.folder:
        kind = "captions" if align else "classify"
        source = {"name": "folder", "path": a.folder, "kind": kind, "caption": a.caption}
    else:
        source = {"name": "llava_json", "path": a.json, "image_root": a.images or None}
    c.data = dict(
        sources=[source],
        tokenizer=a.tokenizer,
        template="plain" if align else "vicuna_v1",  # LLaVA's: bare captions, then chat
        system=None,  # no system message: shorter rows (set one for a chat LLM that expects it)
        max_length=a.max_length,
        preprocess=a.preprocess,
    )
    c.batch_size, c.grad_accum, c.num_steps = a.batch, 1, a.steps
    default_lr = (1e-3 if a.llm_frozen else 3e-3) if align else (2e-5 if a.llm_weights else 1e-3)
    c.optim = dict(lr=a.lr or default_lr, warmup_ratio=0.03, schedule="cosine",
                   weight_decay=0.0, clip_norm=1.0)  # fmt: skip
    c.mesh = {"data": -1}
    c.checkpoint = dict(every_steps=max(a.steps // 2, 1), keep=2, asynchronous=True)
    c.log_every = max(a.steps // 10, 1)
    return c
