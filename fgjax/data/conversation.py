"""Conversations -> token ids and loss masks, built from per-span tokens.

A conversation is LLaVA's list of turns `[{"from": "human" | "gpt", "value": str}, ...]`
("user"/"assistant" are accepted too, and an optional leading "system" turn replaces the
template's system message). The template (templates.py) renders it as pieces; each run of
text is tokenized on its own and the spans are concatenated, so the trained tokens are
exactly the reply spans and their end tokens, whatever the tokenizer (no string-length
arithmetic, which silently masks whole samples when the tokenizer changes).

The image placeholder `<image>` becomes `num_image_tokens` copies of the image-token id:
- "inline" (LLaVA): at the start of the human turn that holds it, followed by "\\n" and the
  turn's text with the placeholder removed (LLaVA's preprocess_multimodal); a row with an
  image but no placeholder gets it at the start of its first human turn;
- "after_bos" (Prismatic): right after BOS, the placeholder removed from the text;
- "gemma3": inline, wrapped as Gemma 3's processor expands `<start_of_image>`: "\\n\\n",
  `<start_of_image>`, N x `<image_soft_token>` (the image id), `<end_of_image>`, "\\n\\n",
  then the turn's text;
- "before_bos" (PaliGemma): first, before BOS, the placeholder removed from the text;
- "qwen_vl" (Qwen2.5-VL): inline as its chat template writes an image and its processor
  expands `<|image_pad|>`: `<|vision_start|>`, N x `<|image_pad|>` (the image id),
  `<|vision_end|>`, then the turn's text with the placeholder removed;
- "internvl" (InternVL): inline as its published chat template writes an image
  (`<IMG_CONTEXT>\\n` before the text) and InternVLProcessor expands `<IMG_CONTEXT>`:
  `<img>`, N x `<IMG_CONTEXT>` (the image id; N = the image's tiles x the tokens per tile),
  `</img>`, "\\n", then the turn's text with the placeholder removed.

Problems with one sample raise `SampleError`; data pipelines skip and count those.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from fgjax.data.templates import Image, Piece, Template, Text, Token, get_template
from fgjax.data.tokenizer import Tokenizer
from fgjax.models.config import VLMConfig
from fgjax.models.qwen_vl import Qwen25VLConfig

HUMAN_ROLES, GPT_ROLES = ("human", "user"), ("gpt", "assistant")
LAYOUTS = ("inline", "after_bos", "gemma3", "before_bos", "qwen_vl", "internvl")
# Gemma 3's, Qwen2.5-VL's and InternVL's image tokens: begin, the image id (repeated), end
GEMMA3_IMAGE_TOKENS = ("<start_of_image>", "<image_soft_token>", "<end_of_image>")
QWEN_VL_IMAGE_TOKENS = ("<|vision_start|>", "<|image_pad|>", "<|vision_end|>")
INTERNVL_IMAGE_TOKENS = ("<img>", "<IMG_CONTEXT>", "</img>")
BOUNDED_LAYOUTS = {
    "gemma3": GEMMA3_IMAGE_TOKENS,
    "qwen_vl": QWEN_VL_IMAGE_TOKENS,
    "internvl": INTERNVL_IMAGE_TOKENS,
}
# the layouts whose model configs name the begin and end ids (InternVL's tokenizer does)
MODEL_BOUNDARIES = ("gemma3", "qwen_vl")


def needs_image_token(image_layout: str) -> bool:
    """Whether a VLM's tokenizer needs LLaVA's `<image>` added (`tokenizer_for(image_token=...)`):
    not for the layouts with their own image tokens, whose prompts hold `<image>` only as text
    (InternVL 3's vocabulary is exactly its tokenizer's: one more id would not fit)."""
    return image_layout not in BOUNDED_LAYOUTS


class SampleError(ValueError):
    """A conversation that cannot be encoded: malformed, or too long for max_length."""


@dataclasses.dataclass(frozen=True)
class EncodedSample:
    """tokens: i32[T]; loss_mask: bool[T], True where token t is a training target (it is
    predicted from tokens < t: the loss compares logits[:-1] with tokens[1:] weighted by
    loss_mask[1:]); num_images: 0 or 1 (the image takes num_image_tokens positions)."""

    tokens: np.ndarray
    loss_mask: np.ndarray
    num_images: int


class ConversationEncoder:
    """Encodes conversations with one tokenizer and template.

    The tokenizer must already hold the image token (`tokenizer.add_image_token(tok)`). The
    template's special tokens must be in the vocabulary; construction fails otherwise (an
    error before training, never a fully masked sample later). Existing template tokens that
    the tokenizer does not yet treat as special are made special (no new ids).
    """

    def __init__(
        self,
        tokenizer: Tokenizer,
        template: str | Template,
        *,
        num_image_tokens: int,
        image_layout: str = "inline",
        image_token: str = "<image>",
        max_length: int | None = None,
    ):
        self.tokenizer = tokenizer
        self.template = get_template(template) if isinstance(template, str) else template
        self.num_image_tokens = num_image_tokens
        self.image_layout = image_layout
        self.image_token = image_token
        self.max_length = max_length
        if image_layout not in LAYOUTS:
            raise ValueError(f"image_layout={image_layout!r}; use one of {LAYOUTS}")
        if num_image_tokens < 1:
            raise ValueError(f"num_image_tokens={num_image_tokens} must be positive")
        if max_length is not None and max_length <= num_image_tokens + 1:
            raise ValueError(
                f"max_length={max_length} leaves no room for text after "
                f"{num_image_tokens} image tokens; raise max_length"
            )
        self._token_ids = self._resolve_special_tokens()
        # the id repeated at the image positions (the placeholder's own, except for the
        # layouts with their own image tokens)
        bounded = BOUNDED_LAYOUTS.get(image_layout)
        self.image_id_token = bounded[1] if bounded else image_token
        self.image_token_id = self._token_ids[self.image_id_token]
        self.uses_bos = "bos" in self._token_ids  # rows start with BOS

    @classmethod
    def for_model(
        cls,
        tokenizer: Tokenizer,
        template: str | Template,
        model_cfg: VLMConfig | Qwen25VLConfig,
        *,
        max_length: int | None = None,
        image_token: str = "<image>",
    ) -> ConversationEncoder:
        """An encoder whose image-token count, layout and ids agree with a VLMConfig (or a
        Qwen25VLConfig with a fixed image size)."""
        encoder = cls(
            tokenizer,
            template,
            num_image_tokens=model_cfg.num_image_tokens,
            image_layout=model_cfg.image_layout,
            image_token=image_token,
            max_length=max_length,
        )
        encoder.check_model(model_cfg)
        return encoder

    def check_model(self, model_cfg: VLMConfig | Qwen25VLConfig) -> None:
        """Raises if the tokenizer does not fit a VLMConfig (ids, vocabulary, image tokens)."""
        problems = []
        if model_cfg.image_token_id != self.image_token_id:
            problems.append(
                f"the model's image_token_id={model_cfg.image_token_id} but the tokenizer's "
                f"{self.image_id_token} is {self.image_token_id}"
            )
        if model_cfg.decoder.vocab_size < self.tokenizer.vocab_size:
            problems.append(
                f"the model's vocab_size={model_cfg.decoder.vocab_size} is smaller than the "
                f"tokenizer's {self.tokenizer.vocab_size}"
            )
        if model_cfg.num_image_tokens != self.num_image_tokens:
            problems.append(
                f"the encoder gives {model_cfg.num_image_tokens} image tokens, the prompts "
                f"hold {self.num_image_tokens}"
            )
        if model_cfg.image_layout != self.image_layout:
            problems.append(f"image_layout {model_cfg.image_layout} != {self.image_layout}")
        if self.image_layout in MODEL_BOUNDARIES:
            names = BOUNDED_LAYOUTS[self.image_layout]
            begin, _, end = (self._token_ids[t] for t in names)
            if model_cfg.image_boundary_ids != (begin, end):
                problems.append(
                    f"the model's image_boundary_ids={model_cfg.image_boundary_ids} but the "
                    f"tokenizer's {names[0]}, {names[2]} are {(begin, end)}"
                )
        if problems:
            raise ValueError("tokenizer and model disagree: " + "; ".join(problems))

    def _resolve_special_tokens(self) -> dict[str, int]:
        tok, template = self.tokenizer, self.template
        name = f"template {template.name!r}"
        ids = {}
        how = (
            ": declare the tokenizer's special tokens in a tokenizer_config.json beside its file "
            '({"bos_token": "<s>", "eos_token": "</s>"}, as Hugging Face writes it) or in '
            'config.data.tokenizer_roles (e.g. {"eos_token": "</s>"})'
        )
        if template.bos == "required" or (template.bos == "if_any" and tok.bos_id is not None):
            ids["bos"] = _require(tok.bos_id, f"{name} starts with BOS but {tok!r} has none{how}")
        if template.end == "eos":
            ids["eos"] = _require(
                tok.eos_id, f"{name} ends replies with EOS but {tok!r} has none{how}"
            )
        # Gemma 3's, Qwen2.5-VL's and InternVL's image tokens are their own; the placeholder
        # is only text there
        image_tokens = BOUNDED_LAYOUTS.get(self.image_layout, (self.image_token,))
        for token in (*template.special_tokens, *image_tokens):  # end: one of these or eos
            token_id = tok.token_to_id(token)
            if token_id is None:
                hint = (
                    "call fgjax.data.tokenizer.add_image_token(tokenizer) first"
                    if token == self.image_token
                    else "use the tokenizer of the model family this template is for"
                )
                raise ValueError(f"{name} needs the token {token!r}, missing from {tok!r}: {hint}")
            if not tok.is_special(token_id):
                tok.add_special_tokens([token])  # same id; stops text from matching it
            ids[token] = token_id
        for token, token_id in ids.items():
            literal = tok.id_to_token(token_id)
            if token_id in tok.encode_continuation(literal):
                raise ValueError(
                    f"{tok!r} produces {token}={literal!r} (id {token_id}) from plain text; "
                    "special tokens must come only from the template"
                )
        for marker in template.text_markers:
            marker_id = tok.token_to_id(marker)
            if marker_id is not None and tok.is_special(marker_id):
                raise ValueError(
                    f"{tok!r} has {marker!r} as a special token but {name} writes it as text: "
                    "this tokenizer expects another chat format"
                )
        return ids

    # -- public encoders ------------------------------------------------------------------

    def encode(self, conversation: list[dict], *, has_image: bool) -> EncodedSample:
        """A training sample: every reply and its end token trained, nothing else.

        Longer than max_length: the text after the image is cut; raises SampleError when the
        image tokens or the whole first reply would be cut.
        """
        system, turns = self._parse(conversation)
        if not any(answer is not None for _, answer in turns):
            raise SampleError("the conversation has no assistant turn to train on")
        pieces = self._render(turns, system, has_image)
        ids, trained = self._tokenize(pieces)
        full_length = len(ids)
        if self.max_length is not None and full_length > self.max_length:
            image_positions = np.flatnonzero(np.asarray(ids) == self.image_token_id)
            image_end = int(image_positions[-1]) + 1 if image_positions.size else 0
            if image_end > self.max_length:
                raise SampleError(
                    f"{full_length} tokens and the image tokens end at {image_end} > "
                    f"max_length={self.max_length}"
                )
            ids, trained = ids[: self.max_length], trained[: self.max_length]
            if not any(trained):
                raise SampleError(
                    f"the first reply starts after max_length={self.max_length} "
                    f"({full_length} tokens)"
                )
        return EncodedSample(
            np.asarray(ids, np.int32), np.asarray(trained, bool), num_images=int(has_image)
        )

    def encode_prompt(
        self, conversation: str | list[dict], *, has_image: bool, lead_in: str | None = None
    ) -> np.ndarray:
        """i32[T]: the prompt for generation or scoring, up to the assistant header of the last
        (human) turn, then the optional answer lead-in ("The photo features a"). A string is
        one question. A prefix of `encode` for the same turns, token for token."""
        if isinstance(conversation, str):
            conversation = [{"from": "human", "value": conversation}]
        system, turns = self._parse(conversation)
        if turns[-1][1] is not None:
            raise SampleError("a prompt must end with a human turn")
        pieces = self._render(turns, system, has_image)
        if lead_in is not None:
            pieces.append(Text(self.template.reply_prefix + lead_in))
        ids, _ = self._tokenize(pieces)
        if self.max_length is not None and len(ids) > self.max_length:
            raise SampleError(f"the prompt has {len(ids)} tokens > max_length={self.max_length}")
        return np.asarray(ids, np.int32)

    # -- internals ------------------------------------------------------------------------

    def _parse(self, conversation) -> tuple[str | None, list[tuple[str, str | None]]]:
        """(system, [(question, answer or None)]) from LLaVA turns; SampleError if malformed."""
        if not isinstance(conversation, list) or not conversation:
            raise SampleError("conversation must be a non-empty list of turns")
        system = self.template.system
        for turn in conversation:
            if not (isinstance(turn, dict) and isinstance(turn.get("value"), str)):
                raise SampleError(f"malformed turn {turn!r}: need {{'from': ..., 'value': str}}")
        if conversation[0].get("from") == "system":
            system, conversation = conversation[0]["value"], conversation[1:]
        turns = []
        for index, turn in enumerate(conversation):
            role = turn.get("from")
            expected = HUMAN_ROLES if index % 2 == 0 else GPT_ROLES
            if role not in expected:
                raise SampleError(
                    f"turn {index} is from {role!r}; turns must alternate human, gpt, ..."
                )
            if index % 2 == 0:
                turns.append((turn["value"], None))
            else:
                turns[-1] = (turns[-1][0], turn["value"])
            if index % 2 == 1 and self.image_token in turn["value"]:
                raise SampleError(f"reply {index} holds {self.image_token}")
        if self.template.single_turn and len(conversation) > 2:
            raise SampleError(f"template {self.template.name!r} takes one human and one gpt turn")
        return system, turns

    def _render(self, turns, system, has_image) -> list[Piece]:
        template, placeholder = self.template, self.image_token
        holders = [i for i, (question, _) in enumerate(turns) if placeholder in question]
        total = sum(question.count(placeholder) for question, _ in turns)
        if not has_image and total:
            raise SampleError(f"the text holds {placeholder} but the row has no image")
        if has_image and total > 1:
            raise SampleError(f"{total} {placeholder} placeholders, but a row has one image")
        image_turn = (holders or [0])[0] if has_image else None
        pieces: list[Piece] = [Token("bos")] if self.uses_bos else []
        for index, (question, answer) in enumerate(turns):
            content: list[Piece] = [Text(question)]
            if index == image_turn:
                rest = question.replace(placeholder, "").strip()
                if self.image_layout in ("after_bos", "before_bos"):
                    content = [Text(rest)]
                elif self.image_layout == "gemma3":
                    begin, _, end = GEMMA3_IMAGE_TOKENS
                    content = [Text("\n\n"), Token(begin), Image(), Token(end), Text("\n\n" + rest)]
                elif self.image_layout == "qwen_vl":
                    begin, _, end = QWEN_VL_IMAGE_TOKENS
                    content = [Token(begin), Image(), Token(end), *([Text(rest)] if rest else [])]
                elif self.image_layout == "internvl":  # its template's "\n" even without text
                    begin, _, end = INTERNVL_IMAGE_TOKENS
                    content = [Token(begin), Image(), Token(end), Text("\n" + rest)]
                else:
                    content = [Image(), *([Text("\n" + rest)] if rest else [])]
            pieces += template.user(index, content, system)
            if answer is not None:
                reply = template.reply_prefix + answer + template.reply_suffix
                pieces += [Text(reply, trained=True), Token(template.end, trained=True)]
        if has_image and self.image_layout == "after_bos":
            pieces.insert(1 if self.uses_bos else 0, Image())
        if has_image and self.image_layout == "before_bos":
            pieces.insert(0, Image())
        return pieces

    def _tokenize(self, pieces: list[Piece]) -> tuple[list[int], list[bool]]:
        """Token ids and trained flags; each run of text is one span, tokenized on its own.

        A span preceded only by BOS and image tokens starts the text: it is encoded as the
        model's tokenizer encodes a text's start (sentencepiece's "▁" prefix), as HF does for
        a prompt string, and as LLaVA does for the text after `<image>`. Every other span is
        a continuation, encoded character for character.
        """
        ids: list[int] = []
        trained: list[bool] = []
        at_start = True
        for piece in _merge_text(pieces):
            if isinstance(piece, Image):
                span = [self.image_token_id] * self.num_image_tokens
            elif isinstance(piece, Token):
                span = [self._token_ids[piece.name]]
                at_start = at_start and piece.name == "bos"
            elif not piece.text:
                continue
            else:
                encode = self.tokenizer.encode if at_start else self.tokenizer.encode_continuation
                span, at_start = encode(piece.text), False
            ids += span
            trained += [getattr(piece, "trained", False)] * len(span)
        return ids, trained


def _merge_text(pieces: list[Piece]) -> list[Piece]:
    """Joins neighbouring text pieces that are both trained or both not."""
    merged: list[Piece] = []
    for piece in pieces:
        last = merged[-1] if merged else None
        if isinstance(piece, Text) and isinstance(last, Text) and last.trained == piece.trained:
            merged[-1] = Text(last.text + piece.text, piece.trained)
        else:
            merged.append(piece)
    return merged


def _require(value, message):
    if value is None:
        raise ValueError(message)
    return value
