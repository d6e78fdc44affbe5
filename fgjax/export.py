"""Export a training run to Hugging Face transformers (or fgjax's own format).

    python -m fgjax.export --workdir=DIR --out=OUT [--step=N] [--dtype=bfloat16|float32]
                           [--format=auto|hf|native] [--tokenizer=PATH] [--max_shard_size=5GB]
                           [--overwrite]

**Exporting to Hugging Face.** `python -m fgjax.export --workdir=runs/llava --out=llava-hf`
turns a training run into a directory that transformers loads directly:
`LlavaForConditionalGeneration.from_pretrained("llava-hf")` and
`AutoProcessor.from_pretrained("llava-hf")`, given the raw image and the prompt, give the same
logits as fgjax (tested to 1e-4 relative in float32; the README gives the measured 3e-7) and
the same greedy generations; tests/export checks both on CLIP- and SigLIP-tower models trained
a few steps. The directory holds `config.json`,
the weights as safetensors in LLaVA's legacy key layout (which every transformers version reads;
sharded with an index above `--max_shard_size`), the run's tokenizer with `<image>` a special
token at the model's image token id, a chat template reproducing the run's prompt template
(`processor.apply_chat_template(messages, add_generation_prompt=True)` gives the tokens fgjax
trained on), the image processor (padding to a square when the run used LLaVA-1.5's
`preprocess="letterbox"`), the LLaVA processor settings (`patch_size`,
`vision_feature_select_strategy`, `num_additional_image_tokens`) and a generation config. A
language model trained alone (`task="lm"`) exports as its `*ForCausalLM` with tokenizer and chat
template; a vision tower alone as its `*VisionModel` with its image processor. The vocabulary
stays the size the model was trained with (pad it when training, e.g. the `vicuna7b_llava`
preset's 32064). By default the run's final parameters are exported (the newest checkpoint if
the run has not finished); `--step=N` picks a checkpoint (or the parameters export of step N,
`config.export_steps`) and `--dtype` casts the weights. Parameters stream from the Orbax
checkpoint to the shards one at a time: the export's peak host memory is about twice the largest
parameter (with scanned layers, one weight of all layers) plus twice a shard -- for a 7B Llama
in 5 GB shards about 21 GB, where holding the model would take 27 GB plus the converted copy.
Models transformers cannot represent -- a fused DINOv2+SigLIP encoder, image tokens placed right
after BOS (`image_layout="after_bos"`), a DINOv2 tower with registers under the "default"
feature strategy, a CLIP/SigLIP tower run at another resolution than its position embeddings,
projectors other than LLaVA's 2-layer MLP -- are exported in fgjax's native parameters format
instead (`fgjax.native.load(OUT)` reads them back), with a message naming the reason;
`--format=hf` makes that an error and `--format=native` always writes the native format. An
incomplete workdir (no checkpoint, a checkpoint that was never finished or lost files, a missing
`config.json`, an unknown `--step`) stops the export with a message listing what the workdir
holds; a failed export leaves nothing behind in OUT.
"""

from __future__ import annotations

import argparse
import ctypes
import logging
import re
import sys

from fgjax.hf.configs import UnsupportedModelError
from fgjax.hf.export import FORMATS, export_run
from fgjax.rundir import RunError

_UNITS = {"B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "KIB": 2**10, "MIB": 2**20, "GIB": 2**30}


def parse_size(text: str) -> int:
    """ "5GB", "500MiB", "1000" (bytes) -> bytes."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*", text)
    unit = match.group(2).upper() if match else ""
    if not match or (unit and unit not in _UNITS):
        raise ValueError(f"cannot read the size {text!r}; write e.g. 5GB, 500MB or 2GiB")
    return int(float(match.group(1)) * _UNITS.get(unit, 1))


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m fgjax.export",
        description="Export an fgjax training run to Hugging Face transformers.",
    )
    p.add_argument("--workdir", required=True, help="the training run's workdir")
    p.add_argument("--out", required=True, help="the directory to write")
    p.add_argument("--step", type=int, help="checkpoint step (default: the final parameters)")
    p.add_argument("--dtype", choices=["float32", "bfloat16", "float16"],
                   help="weight dtype (default: as trained)")  # fmt: skip
    p.add_argument("--format", choices=FORMATS, default="auto",
                   help="auto: transformers when it can represent the model, else fgjax-native")  # fmt: skip
    p.add_argument("--tokenizer", help="the run's tokenizer, if config.data.tokenizer has moved")
    p.add_argument("--max_shard_size", default="5GB", help="largest safetensors shard (5GB)")
    p.add_argument("--overwrite", action="store_true", help="replace an earlier export in --out")
    return p


def free_memory_eagerly() -> None:
    """Makes glibc give freed buffers over 1 MiB back to the system at once. By default, once
    it has freed a large buffer it raises its mmap threshold (up to 32 MiB) and keeps later
    buffers of that size in its per-thread arenas: the reader's per-tensor buffers then pile
    up to about another model's worth of resident memory. No-op without glibc."""
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return
    libc.mallopt(-3, 1 << 20)  # M_MMAP_THRESHOLD = 1 MiB


def main(argv: list[str] | None = None) -> None:
    """Runs the export; exits with a one-line message on errors a user can fix."""
    args = parser().parse_args(argv)
    free_memory_eagerly()
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")
    logging.getLogger("absl").setLevel(logging.WARNING)  # Orbax logs every tensor it reads
    try:
        result = export_run(
            args.workdir,
            args.out,
            step=args.step,
            dtype=args.dtype,
            format=args.format,
            tokenizer=args.tokenizer,
            max_shard_bytes=parse_size(args.max_shard_size),
            overwrite=args.overwrite,
        )
    except (RunError, UnsupportedModelError, FileExistsError, ValueError) as e:
        sys.exit(f"fgjax.export: error: {e}")
    if result.format == "hf":
        print(f"wrote {result.architecture} ({result.source}) to {result.path}; load it with "
              f"transformers' from_pretrained({str(result.path)!r})")  # fmt: skip
    else:
        why = (
            f"transformers cannot represent this model: {result.reason}. " if result.reason else ""
        )
        print(f"{why}Wrote an fgjax-native parameters export ({result.source}) to "
              f"{result.path}; load it with fgjax.native.load({str(result.path)!r})")  # fmt: skip


if __name__ == "__main__":
    main()
