"""Prompt templates: how each model family lays out a conversation, as a list of pieces.

A template renders text pieces (tokenized span by span, see `conversation.py`), special
tokens by name and the image placeholder. Only an assistant reply and the token that ends it
are trained. The exact strings, for a conversation q1, a1, q2, a2 (`<s>`/`</s>` are the
tokenizer's BOS/EOS, `<image>` expands to N image tokens; `[...]` marks the trained spans):

plain (LLaVA / Prismatic alignment stage; the human turn is dropped, only the image kept;
       BOS only if the tokenizer has one, e.g. not for Qwen2)
    <s><image>[caption</s>]
    LLaVA ends captions with "\\n" (its `plain` separator); we end them with EOS as Prismatic
    does, so that a model knows where a caption stops.
vicuna_v1 (LLaVA-1.5, Vicuna v1.1 chat; system = LLaVA's default below)
    <s>{system} USER: <image>\\n{q1} ASSISTANT:[ {a1}</s>]USER: {q2} ASSISTANT:[ {a2}</s>]
llama2 (Llama-2-chat and LLaVA's llava_llama_2)
    <s>[INST] <<SYS>>\\n{system}\\n<</SYS>>\\n\\n{q1} [/INST][ {a1} </s>]<s>[INST] {q2} [/INST][ {a2} </s>]
mistral (Mistral-Instruct v0.1/v0.2; a system message goes before q1, then "\\n\\n")
    <s>[INST] {q1} [/INST][ {a1}</s>][INST] {q2} [/INST][ {a2}</s>]
chatml (Qwen2; no BOS; system defaults to Qwen2's "You are a helpful assistant.")
    <|im_start|>system\\n{system}<|im_end|>\\n<|im_start|>user\\n{q1}<|im_end|>\\n
    <|im_start|>assistant\\n[{a1}<|im_end|>]\\n<|im_start|>user\\n{q2}<|im_end|>\\n
    <|im_start|>assistant\\n[{a2}<|im_end|>]
gemma (Gemma; no system role: a system message goes before q1, then "\\n\\n", as Gemma-3)
    <bos><start_of_turn>user\\n{q1}<end_of_turn>\\n<start_of_turn>model\\n[{a1}<end_of_turn>]\\n
    <start_of_turn>user\\n{q2}<end_of_turn>\\n<start_of_turn>model\\n[{a2}<end_of_turn>]
paligemma (PaliGemma, big_vision's prefix format; one question; its "before_bos" image layout
       puts the image first, as PaliGemmaProcessor does)
    <image><bos>{q1}\\n[{a1}<eos>]

A generation prompt stops after the assistant header ("... ASSISTANT:", "[/INST]",
"<|im_start|>assistant\\n"), followed by `reply_prefix` + an optional answer lead-in.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable


@dataclasses.dataclass(frozen=True)
class Text:
    """Text, tokenized as one span."""

    text: str
    trained: bool = False


@dataclasses.dataclass(frozen=True)
class Token:
    """One special token: "bos", "eos" (the tokenizer's) or a literal such as "<|im_end|>"."""

    name: str
    trained: bool = False


@dataclasses.dataclass(frozen=True)
class Image:
    """The image placeholder, expanded to the encoder's number of image tokens."""


Piece = Text | Token | Image
# Renders human turn `index` (its content already split into pieces) and the assistant header
# that follows it; `system` is the system message (None: none), rendered with turn 0.
UserTurn = Callable[[int, list[Piece], str | None], list[Piece]]


@dataclasses.dataclass(frozen=True)
class Template:
    """A chat format. An assistant turn is `reply_prefix + answer + reply_suffix` then `end`.

    special_tokens: literal special tokens the template emits (must be in the vocabulary);
    text_markers: strings it writes as plain text (a vocabulary that makes them special
    tokens is in another format); bos: whether the sequence starts with the tokenizer's BOS,
    "required", "if_any" (when the tokenizer has one: captions for any model) or "never".
    """

    name: str
    user: UserTurn
    reply_prefix: str = ""
    reply_suffix: str = ""
    end: str = "eos"
    bos: str = "required"
    system: str | None = None
    special_tokens: tuple[str, ...] = ()
    text_markers: tuple[str, ...] = ()
    single_turn: bool = False  # one (human, gpt) pair only: captions

    def __post_init__(self):
        if self.bos not in ("required", "if_any", "never"):
            raise ValueError(f"bos={self.bos!r}; use 'required', 'if_any' or 'never'")

    def with_system(self, system: str | None) -> Template:
        """The same format with another system message (None: no system message)."""
        return dataclasses.replace(self, system=system)


LLAVA_SYSTEM = (
    "A chat between a curious user and an artificial intelligence assistant. "
    "The assistant gives helpful, detailed, and polite answers to the user's questions."
)
LLAVA_LLAMA2_SYSTEM = (
    "You are a helpful language and vision assistant. You are able to understand the visual "
    "content that the user provides, and assist the user with a variety of tasks using "
    "natural language."
)
QWEN2_SYSTEM = "You are a helpful assistant."
IM_START, IM_END = "<|im_start|>", "<|im_end|>"
START_OF_TURN, END_OF_TURN = "<start_of_turn>", "<end_of_turn>"


def _paligemma_user(index, content, system):
    return [*content, Text("\n")]


def _plain_user(index, content, system):
    return [piece for piece in content if isinstance(piece, Image)]


def _vicuna_user(index, content, system):
    head = [Text(f"{system} ")] if index == 0 and system else []
    return [*head, Text("USER: "), *content, Text(" ASSISTANT:")]


def _llama2_user(index, content, system):
    head = [Token("bos")] if index > 0 else []  # every turn after the first restarts with <s>
    wrapped = f"<<SYS>>\n{system}\n<</SYS>>\n\n" if index == 0 and system else ""
    return [*head, Text("[INST] " + wrapped), *content, Text(" [/INST]")]


def _mistral_user(index, content, system):
    prefix = f"{system}\n\n" if index == 0 and system else ""
    return [Text("[INST] " + prefix), *content, Text(" [/INST]")]


def _chatml_user(index, content, system):
    head = [Text("\n")] if index > 0 else []
    if index == 0 and system:
        head = [Token(IM_START), Text(f"system\n{system}"), Token(IM_END), Text("\n")]
    return [
        *head,
        Token(IM_START),
        Text("user\n"),
        *content,
        Token(IM_END),
        Text("\n"),
        Token(IM_START),
        Text("assistant\n"),
    ]


def _gemma_user(index, content, system):
    head = [Text("\n")] if index > 0 else []
    prefix = f"{system}\n\n" if index == 0 and system else ""
    return [
        *head,
        Token(START_OF_TURN),
        Text("user\n" + prefix),
        *content,
        Token(END_OF_TURN),
        Text("\n"),
        Token(START_OF_TURN),
        Text("model\n"),
    ]


TEMPLATES: dict[str, Template] = {
    t.name: t
    for t in (
        Template("plain", _plain_user, bos="if_any", single_turn=True),
        Template("vicuna_v1", _vicuna_user, reply_prefix=" ", system=LLAVA_SYSTEM),
        Template(
            "llama2",
            _llama2_user,
            reply_prefix=" ",
            reply_suffix=" ",
            system=LLAVA_LLAMA2_SYSTEM,
            text_markers=("[INST]", "[/INST]", "<<SYS>>", "<</SYS>>"),
        ),
        Template("mistral", _mistral_user, reply_prefix=" ", text_markers=("[INST]", "[/INST]")),
        Template(
            "chatml",
            _chatml_user,
            end=IM_END,
            bos="never",
            system=QWEN2_SYSTEM,
            special_tokens=(IM_START, IM_END),
        ),
        Template(
            "gemma", _gemma_user, end=END_OF_TURN, special_tokens=(START_OF_TURN, END_OF_TURN)
        ),
        Template("paligemma", _paligemma_user, single_turn=True),
    )
}


def get_template(name: str) -> Template:
    """The template registered under `name`."""
    if name not in TEMPLATES:
        raise ValueError(f"unknown prompt template {name!r}; available: {sorted(TEMPLATES)}")
    return TEMPLATES[name]
