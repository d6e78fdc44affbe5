"""Prompts of the evaluation protocols, tokenized in the model's chat template.

Every prompt is one human turn (with the image) followed by the assistant header, and for
likelihood ranking an answer lead-in. With LLaVA's vicuna_v1 template:

    likelihood     USER: <image>\\nWhat type of object is in this photo? ASSISTANT: The photo features a
                   + " <class name>" teacher-forced
    open world     USER: <image>\\nWhat type of object is in this photo? ASSISTANT:
    closed world   USER: <image>\\nWhat type of object is in this photo? Choose one from "c3, c1, ...". ASSISTANT:
    multiple choice USER: <image>\\nWhat type of object is in this photo?\\nA. c7\\nB. c2\\n...
                   Answer with the option's letter from the given choices directly. ASSISTANT:
                   + the log-probs of the answers " A", " B", ... (reply prefix + letter)
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from fgjax.data.conversation import ConversationEncoder
from fgjax.data.tokenizer import Tokenizer
from fgjax.evaluate.matching import LETTERS, option_lines

QUESTION = "What type of object is in this photo?"
LEAD_IN = "The photo features a"
CLOSED_WORLD = '{question} Choose one from "{names}".'
MULTIPLE_CHOICE = (
    "{question}\n{options}\nAnswer with the option's letter from the given choices directly."
)
SHORT_ANSWER = "{question}\nAnswer the question using a single word or phrase."


class Prompter:
    """Token ids for prompts, class-name continuations and option letters of one model."""

    def __init__(self, encoder: ConversationEncoder):
        self.encoder = encoder
        self.tokenizer: Tokenizer = encoder.tokenizer
        self.reply_prefix = encoder.template.reply_prefix

    def prompt(self, question: str, *, has_image: bool = True, lead_in: str | None = None):
        """i32[T]: one human turn holding the image, then the assistant header (+ lead-in)."""
        return self.encoder.encode_prompt(question, has_image=has_image, lead_in=lead_in)

    def continuation(self, text: str, lead_in: str | None) -> list[int]:
        """Tokens of `text` as the answer's next words: after the assistant header it follows
        the template's reply prefix, after a lead-in a space (unless the lead-in ends with
        one)."""
        if lead_in is None:
            separator = self.reply_prefix
        else:
            separator = "" if not lead_in or lead_in[-1].isspace() else " "
        return self.tokenizer.encode_continuation(separator + text)

    def letter_continuations(self, count: int) -> list[list[int]]:
        """Tokens of the answers " A", " B", ... (reply prefix + letter): usually one token
        each, the token a model answering with a letter emits first."""
        return [self.continuation(letter, None) for letter in LETTERS[:count]]

    def stop_ids(self) -> np.ndarray:
        """i32[K]: tokens that end a generated reply (the template's end token and EOS)."""
        template, tok = self.encoder.template, self.tokenizer
        ids = {tok.eos_id} if tok.eos_id is not None else set()
        if template.end != "eos":
            ids.add(tok.token_to_id(template.end))
        ids.discard(None)
        if not ids:
            raise ValueError(f"{tok!r} has no EOS and template {template.name!r} no end token")
        return np.asarray(sorted(ids), np.int32)

    def decode_reply(self, tokens: Sequence[int]) -> str:
        """Generated ids (as `greedy_generate` returns them) up to the stop token -> text."""
        stops = set(self.stop_ids().tolist())
        kept = []
        for token in tokens:
            if token < 0 or token in stops:
                break
            kept.append(int(token))
        return self.tokenizer.decode(kept).strip()


def closed_world_question(question: str, names: Sequence[str]) -> str:
    return CLOSED_WORLD.format(question=question, names=", ".join(names))


def multiple_choice_question(question: str, options: Sequence[str]) -> str:
    return MULTIPLE_CHOICE.format(question=question, options=option_lines(options))


def short_answer_question(question: str) -> str:
    return SHORT_ANSWER.format(question=question)


def pad_prompts(prompts: Sequence[np.ndarray], length: int | None = None, bucket: int = 32):
    """Right-pads token arrays to one length (a multiple of `bucket`, so that few shapes get
    compiled; at least `length`). Returns tokens i32[B, T] (padding 0) and mask bool[B, T]."""
    longest = max(len(p) for p in prompts)
    target = max(length or 0, bucket * math.ceil(longest / bucket))
    tokens = np.zeros((len(prompts), target), np.int32)
    mask = np.zeros((len(prompts), target), bool)
    for row, prompt in enumerate(prompts):
        tokens[row, : len(prompt)] = prompt
        mask[row, : len(prompt)] = True
    return tokens, mask
