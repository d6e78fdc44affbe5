"""Several VLMs of any mix of families side by side: every model under the same fine-grained
datasets and protocols, CLIP-style zero-shot references beside them, one table
(OUT/comparison.md and .csv; see fgjax/evaluate/compare.py).

    python -m fgjax.main --workdir=OUT --config=configs/eval/compare.py:\\
      models=hf:/m/llava-1.5-7b-hf+run:/runs/llava_qwen3,templates=vicuna_v1+auto,\\
      references=run:/runs/clip,datasets=oxford_flowers102+cars196,max_examples=1000

Arguments: models ("+"-separated "hf:DIR" / "run:DIR"), templates and tokenizers (one per
model, "auto" = the model's own), references (contrastive "run:DIR"s), prompt (the references'
class prompt), and every key of configs/eval/fine_grained.py except model (shared by all).
"""

from fgjax.evaluate import compare, configs

DATASETS = configs.FINE_GRAINED


def get_config(arg: str = ""):
    return compare.build(arg, datasets=DATASETS, protocols=configs.PROTOCOLS)
