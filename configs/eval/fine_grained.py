"""Zero-shot fine-grained classification of one model on the fine-grained TFDS datasets under
every protocol -- likelihood ranking (sum / mean, calibrated), 5-way multiple choice with hard
negatives, open- and closed-world generation, linear probes -- plus the built-in general
questions.

    python -m fgjax.main --workdir=OUT \\
      --config=configs/eval/fine_grained.py:model=run:/runs/stage2
    python -m fgjax.main --workdir=OUT \\
      --config=configs/eval/fine_grained.py:model=hf:/models/llava-1.5-7b-hf,template=vicuna_v1,datasets=oxford_flowers102+cars196,max_examples=1000

Arguments: see fgjax/evaluate/configs.py (model, tokenizer, template, datasets, protocols,
max_examples, negatives, options_dir, data_dir, batch_size, k). The default datasets need no
manual download; add fgvc_aircraft or imagenet2012 (manual downloads) with datasets=... .
"""

from fgjax.evaluate import configs

DATASETS = configs.FINE_GRAINED


def get_config(arg: str = ""):
    return configs.build(arg, datasets=DATASETS, protocols=configs.PROTOCOLS)
