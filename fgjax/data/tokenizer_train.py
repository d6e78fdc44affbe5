"""Train small tokenizers offline from a text iterator: a byte-level BPE `tokenizer.json`
(GPT-2 / Qwen2 / Llama-3 style) or a sentencepiece model (Llama-2 / Gemma style).

Used by tests and by the CPU-scale study, which ships its own tokenizer. Special tokens get
the lowest ids, in the order given, and are never produced from text.
"""

from __future__ import annotations

import io
from collections.abc import Iterable, Sequence

import sentencepiece as spm
import tokenizers
from tokenizers import decoders, models, pre_tokenizers, trainers

from fgjax.data import templates
from fgjax.data.tokenizer import HFTokenizer, SentencePieceTokenizer, Tokenizer, add_image_token

# The special tokens of every chat template, so one tiny tokenizer serves them all.
CHAT_SPECIAL_TOKENS = (
    templates.IM_START,
    templates.IM_END,
    templates.START_OF_TURN,
    templates.END_OF_TURN,
)
_TINY_CORPUS = (
    templates.LLAVA_SYSTEM,
    templates.LLAVA_LLAMA2_SYSTEM,
    templates.QWEN2_SYSTEM,
    "USER: What type of object is in this photo? ASSISTANT: The photo features a bird.",
    "[INST] <<SYS>> <</SYS>> Describe the image. [/INST] A small red flower on a green stem.",
    "system user assistant model: How many objects are there? There are 3 objects.",
    "Render a clear and concise summary of the photo. A dog runs on the grass in the park.",
    "Is there a border? Yes. Which side is the specimen on? The left side. Background: blue.",
    "The quick brown fox jumps over the lazy dog, 0123456789 times!",
)


def train_bpe(
    texts: Iterable[str],
    vocab_size: int,
    *,
    bos_token: str | None = "<s>",
    eos_token: str = "</s>",
    pad_token: str | None = None,
    special_tokens: Sequence[str] = (),
) -> HFTokenizer:
    """A byte-level BPE tokenizer (no unknown tokens: every byte is in the alphabet).

    `vocab_size` counts the 256 byte symbols and the special tokens (ids 0, 1, ... in the
    order bos, eos, pad, *special_tokens); the trainer stops early on a tiny corpus.
    """
    named = [t for t in (bos_token, eos_token, pad_token) if t is not None]
    specials = list(dict.fromkeys([*named, *special_tokens]))
    tokenizer = tokenizers.Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer)
    return HFTokenizer(
        tokenizer.to_str(), bos_token=bos_token, eos_token=eos_token, pad_token=pad_token
    )


def train_sentencepiece(
    texts: Iterable[str],
    vocab_size: int,
    *,
    model_type: str = "bpe",
    add_dummy_prefix: bool = True,
    pad_token: str | None = None,
    special_tokens: Sequence[str] = (),
) -> SentencePieceTokenizer:
    """A sentencepiece model like Llama-2's: <unk>=0, <s>=1, </s>=2, byte fallback (unseen
    characters become <0xNN> byte pieces), digits split, no text normalization.

    `vocab_size` must exceed 259 + the special tokens (the byte pieces count); with
    `add_dummy_prefix` the model prepends "▁" to a sequence's text, as Llama's does
    (Gemma's does not). `special_tokens` (and `pad_token`) are CONTROL pieces from id 3 on.
    """
    control = list(dict.fromkeys([t for t in (pad_token, *special_tokens) if t is not None]))
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(texts),
        model_writer=model,
        vocab_size=vocab_size,
        model_type=model_type,
        unk_id=0,
        bos_id=1,
        eos_id=2,
        pad_id=-1,
        control_symbols=control,
        byte_fallback=True,
        split_digits=True,
        character_coverage=1.0,
        normalization_rule_name="identity",
        add_dummy_prefix=add_dummy_prefix,
        remove_extra_whitespaces=False,
        allow_whitespace_only_pieces=True,
        hard_vocab_limit=False,
        num_threads=1,
        minloglevel=2,
    )
    return SentencePieceTokenizer(model.getvalue(), pad_token=pad_token)


def tiny_tokenizer(
    kind: str = "bpe", vocab_size: int = 512, texts: Iterable[str] = ()
) -> Tokenizer:
    """A small tokenizer trained in milliseconds on a built-in English corpus plus `texts`,
    with the special tokens of every template and LLaVA's `<image>` and `<pad>` appended (in
    that order, after the trained vocabulary). For tests, demos and CPU-scale runs.

    kind: "bpe" (byte-level BPE tokenizer.json) or "sentencepiece" (Llama-style model).
    """
    corpus = [*_TINY_CORPUS, *texts] * 4
    if kind == "bpe":
        tokenizer = train_bpe(corpus, vocab_size, special_tokens=CHAT_SPECIAL_TOKENS)
    elif kind == "sentencepiece":
        tokenizer = train_sentencepiece(corpus, vocab_size, special_tokens=CHAT_SPECIAL_TOKENS)
    else:
        raise ValueError(f"kind={kind!r}; use 'bpe' or 'sentencepiece'")
    add_image_token(tokenizer)
    return tokenizer
