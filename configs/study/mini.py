"""The miniature study on the built-in specimens data: the whole ablation grid on a CPU.

    python -m fgjax.study --workdir=study [--seeds=N]
    python -m fgjax.main --config=configs/study/mini.py:seeds=2 --workdir=study

Arguments: seeds (1), steps_scale (1.0: multiplies every training length; tests use a tiny
value), eval_size (test images per protocol).

Stage 0 trains the components: one contrastive (SigLIP-style) image-text model, whose image
tower at `encoder.base_step` is the base encoder and at the end the upgraded one; one language
model on text, likewise base (early) and upgraded (final). Both upgrades are "the same
architecture, trained longer" -- as DFN-CLIP improves on CLIP by its training, not its shape.
The contrastive model trains on a filtered pool of pairs, those whose caption names the class
(`encoder.caption_kinds`), as CLIP-style encoders learn class names from web-scale data and
DFN filters it; alignment (stage 1) uses the raw alt-text, where 40% of captions name the class.
The five-way negatives are mined by the base snapshot of the contrastive model
(`eval.negatives_from`), as the paper mines with CLIP, the base encoder of LLaVA-1.5.
Stage 1 aligns every (encoder, LLM) pair on captions with the LLM frozen or trained; stage 2
instruction-tunes each on general questions; then every variant is evaluated.
"""

import ml_collections

from fgjax.config_utils import parse_arg


def get_config(arg=None):
    a = parse_arg(arg, seeds=1, steps_scale=1.0, eval_size=300)
    scale = float(a.steps_scale)

    def steps(n):
        return max(2, int(round(n * scale)))

    c = ml_collections.ConfigDict()
    c.job = "study"
    c.seeds = a.seeds
    c.resolution = 32
    c.train_size = 10_000  # specimens training examples (generated once, shared by all stages)
    c.tokenizer = dict(vocab_size=768, corpus_size=2000)

    # stage 0: the contrastive image-text model -> base (early) and upgraded (final) encoders
    c.encoder = dict(
        preset="tiny_siglip",
        # the VLM reads the last block's patch features: LLaVA's "penultimate layer" suits deep
        # towers, but of two blocks it is the first, before the contrastive model's fine features
        overrides=dict(
            width=64, depth=2, num_heads=4, mlp_dim=128, image_size=32, patch_size=8,
            feature_layer=-1,
        ),  # fmt: skip
        text=dict(width=64, depth=2, num_heads=4, mlp_dim=128, max_length=24),
        embed_dim=64,
        steps=steps(500),
        base_step=steps(100),
        batch_size=128,
        lr=3e-3,
        caption_kinds=("name",),  # a subset of fgjax.data.specimens.CAPTION_KINDS
    )
    # stage 0: the language model on text -> base (early) and upgraded (final) LLMs
    c.llm = dict(
        preset="tiny_llama",
        overrides=dict(width=128, depth=2, num_heads=4, num_kv_heads=2, mlp_dim=256),
        steps=steps(200),
        base_step=steps(50),
        batch_size=64,
        max_length=48,
        lr=3e-3,
    )
    # stage 1: alignment on captions (projector; plus the LLM in the "trained" variants)
    c.align = dict(steps=steps(180), batch_size=64, max_length=32, lr=1e-2, llm_lr_mult=1.0)
    # stage 2: instruction tuning on general questions and short captions (projector + LLM)
    c.finetune = dict(steps=steps(30), batch_size=32, max_length=112, lr=1e-3)
    c.template = "vicuna_v1"
    c.system = None  # no system message: shorter sequences, nothing lost at this scale
    # five-way negatives are mined by the base encoder's contrastive model, as the paper mines
    # with CLIP, the base encoder of LLaVA-1.5, and tests its DFN-CLIP upgrade on those questions
    c.eval = dict(size=a.eval_size, batch_size=50, probe_train_size=2000, negatives_from="base")
    c.checkpoint_every = 200
    return c
