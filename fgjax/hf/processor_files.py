"""The files besides the weights that make an exported directory usable with transformers'
`AutoTokenizer` / `AutoProcessor`: tokenizer, chat template, image processor, LLaVA processor
and generation config. Written as plain JSON (transformers is not needed to export), in the
layout that transformers 4 and 5 both read:

    tokenizer.json | tokenizer.model, tokenizer_config.json   the run's tokenizer, `<image>` special
    chat_template.jinja                                       the run's prompt template
    preprocessor_config.json                                  the image processor (fgjax.data.images;
                                                              Qwen2.5-VL's: data.qwen_patches)
    processor_config.json                                     LlavaProcessor: patch_size, strategy,
                                                              num_additional_image_tokens
    generation_config.json                                    bos / eos / pad ids
"""

from __future__ import annotations

import json
import logging
import os

import tokenizers

from fgjax.data import images, qwen_patches
from fgjax.data.templates import get_template
from fgjax.data.tokenizer import HFTokenizer, SentencePieceTokenizer, Tokenizer
from fgjax.hf.chat_templates import chat_template

IMAGE_TOKEN = "<image>"
CHAT_TEMPLATE_FILE = "chat_template.jinja"


def _dump(path: str, data: dict) -> None:
    with open(path, "w") as f:
        json.dump(data, f, indent=2)
        f.write("\n")


def _adds_bos(directory: str, bos_id: int) -> bool:
    """Whether the tokenizer.json in `directory` prepends BOS by itself (a post-processor)."""
    saved = tokenizers.Tokenizer.from_file(os.path.join(directory, "tokenizer.json"))
    ids = saved.encode("a", add_special_tokens=True).ids
    return bool(ids) and ids[0] == bos_id


def write_tokenizer(
    tokenizer: Tokenizer,
    directory: str,
    *,
    template: str | None,
    max_length: int,
    processor_class: str | None = None,
    image_layout: str = "inline",
) -> str | None:
    """Writes the tokenizer files and, for a prompt `template` name, chat_template.jinja
    (writing an image as `image_layout` places it). Returns the chat template (None without
    one).

    BOS: fgjax's templates start with BOS (or not, "chatml"); transformers' tokenizer either
    prepends it by itself (LlamaTokenizer's add_bos_token, a tokenizer.json post-processor)
    or the chat template writes it -- never both, so the ids match fgjax's."""
    tokenizer.save(directory)  # tokenizer.json or tokenizer.model, and a first tokenizer_config
    uses_bos = tokenizer.bos_id is not None and (
        template is None or get_template(template).bos != "never"
    )
    config = {role: getattr(tokenizer, role) for role in ("bos_token", "eos_token", "pad_token",
                                                          "unk_token")}  # fmt: skip
    config.update(
        model_max_length=max_length,
        clean_up_tokenization_spaces=False,  # decode exactly as fgjax does
        added_tokens_decoder={
            str(i): {
                "content": tokenizer.id_to_token(i),
                "special": True,
                "normalized": False,
                "lstrip": False,
                "rstrip": False,
                "single_word": False,
            }
            for i in range(tokenizer.vocab_size)
            if tokenizer.is_special(i)
        },  # fmt: skip
    )
    if isinstance(tokenizer, HFTokenizer):
        config["tokenizer_class"] = "PreTrainedTokenizerFast"
        adds_bos = tokenizer.bos_id is not None and _adds_bos(directory, tokenizer.bos_id)
        if adds_bos and not uses_bos:
            logging.warning("the tokenizer prepends BOS by itself but template %r starts "
                            "without it: remove BOS from HF prompts", template)  # fmt: skip
    elif isinstance(tokenizer, SentencePieceTokenizer):
        # transformers converts the sentencepiece model; legacy=False and the prefix space
        # reproduce fgjax's encoding of text after special tokens
        adds_bos = uses_bos
        config.update(
            tokenizer_class="LlamaTokenizer",
            add_bos_token=adds_bos,
            add_eos_token=False,
            legacy=False,
            add_prefix_space=tokenizer.prefix_space,
        )
    else:
        raise TypeError(f"cannot export a {type(tokenizer).__name__}")
    if processor_class:
        config["processor_class"] = processor_class
    rendered = None
    if template is not None:
        rendered = chat_template(template, bos=uses_bos and not adds_bos, image_layout=image_layout)
        config["chat_template"] = rendered  # transformers < 4.43 reads it from here
        with open(os.path.join(directory, CHAT_TEMPLATE_FILE), "w") as f:
            f.write(rendered)
    _dump(os.path.join(directory, "tokenizer_config.json"), config)
    return rendered


def write_image_processor(
    directory: str, vit_cfg, mode: str | None, processor_class: str | None = None
) -> dict:
    """preprocessor_config.json reproducing fgjax's preprocessing of `vit_cfg` in `mode`
    (config.data.preprocess; None = the tower family's default)."""
    config = images.hf_preprocessor_config(images.preprocess_config_for(vit_cfg, mode=mode))
    if processor_class:
        config["processor_class"] = processor_class
    _dump(os.path.join(directory, "preprocessor_config.json"), config)
    return config


def write_qwen_image_processor(directory: str, tower_cfg, mode: str | None) -> dict:
    """preprocessor_config.json of Qwen2VLImageProcessor giving the patches a Qwen2.5-VL tower
    trained at its fixed_size took (for images of that size: see data/qwen_patches.py)."""
    config = qwen_patches.hf_preprocessor_config(qwen_patches.patch_config_for(tower_cfg, mode))
    config["processor_class"] = "Qwen2_5_VLProcessor"
    _dump(os.path.join(directory, "preprocessor_config.json"), config)
    return config


def llava_processor_config(vlm_cfg, hf_config: dict) -> dict:
    """processor_config.json of LlavaProcessor. It expands each `<image>` to
    (S/p)^2 + num_additional_image_tokens, minus 1 for the "default" strategy (which drops the
    CLS); newer processors default num_additional_image_tokens to 0, so it is always written."""
    enc = vlm_cfg.encoder
    strategy = hf_config["vision_feature_select_strategy"]
    config = {
        "processor_class": "LlavaProcessor",
        "image_token": IMAGE_TOKEN,
        "patch_size": enc.patch_size,
        "vision_feature_select_strategy": strategy,
        "num_additional_image_tokens": enc.num_prefix_tokens,
    }
    expanded = (enc.resolution // enc.patch_size) ** 2 + enc.num_prefix_tokens
    expanded -= strategy == "default"
    if expanded != vlm_cfg.num_image_tokens:  # config_export refuses such models; stay safe
        raise ValueError(
            f"LlavaProcessor would expand <image> to {expanded} tokens but the model takes "
            f"{vlm_cfg.num_image_tokens}"
        )
    return config


def write_llava_processor(directory: str, vlm_cfg, hf_config: dict) -> None:
    _dump(
        os.path.join(directory, "processor_config.json"), llava_processor_config(vlm_cfg, hf_config)
    )


def generation_config(tokenizer: Tokenizer, template: str | None) -> dict:
    """bos / eos / pad ids; eos lists the template's reply end token too (`<|im_end|>`)."""
    eos = [tokenizer.eos_id] if tokenizer.eos_id is not None else []
    if template is not None and get_template(template).end != "eos":
        eos.append(tokenizer.token_to_id(get_template(template).end))
    config = {"bos_token_id": tokenizer.bos_id, "pad_token_id": tokenizer.pad_id}
    config["eos_token_id"] = eos[0] if len(eos) == 1 else (eos or None)
    return config


def write_generation_config(directory: str, tokenizer: Tokenizer, template: str | None) -> None:
    _dump(os.path.join(directory, "generation_config.json"), generation_config(tokenizer, template))
