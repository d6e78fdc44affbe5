"""Tokenizers: one small interface over HF `tokenizer.json` files (the `tokenizers` library)
and sentencepiece `.model` files.

Two ways to encode text, both returning `list[int]`:

- `encode(text, add_bos=False)`: text that *starts* a sequence, tokenized exactly as the
  model's own tokenizer does (sentencepiece and Metaspace models prepend a space, so "Hello"
  becomes "▁Hello"; byte-level BPE models prepend nothing).
- `encode_continuation(text)`: text that *continues* a sequence: exactly these characters,
  no prefix space, no BOS. Prompt templates build a sequence from such spans, so the tokens
  of every span are known exactly and `decode(encode_continuation(t)) == t`.

Neither ever produces a special token from text: "<image>" or "</s>" written in a user's text
encode as ordinary characters. Special tokens enter a sequence only by id (`token_to_id`).
`decode(ids)` inverts `encode_continuation` and writes special tokens as their strings.

New special tokens are appended to the vocabulary (ids `vocab_size`, `vocab_size + 1`, ...),
as LLaVA adds `<image>` (32000) and `<pad>` (32001) to the Llama-2 vocabulary.
"""

from __future__ import annotations

import abc
import json
import os
import re
import string
from collections.abc import Iterable, Sequence

import sentencepiece as spm
import tokenizers
from sentencepiece import sentencepiece_model_pb2 as sp_pb2

from fgjax import storage

CONFIG_FILE = "tokenizer_config.json"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "spiece.model")  # in a directory, in order
SPECIAL_ROLES = ("bos_token", "eos_token", "pad_token", "unk_token")


class Tokenizer(abc.ABC):
    """The interface prompt templates and pipelines use. The special-token attributes are
    strings (None when the tokenizer has none); set `pad_token` to choose the padding token."""

    bos_token: str | None = None
    eos_token: str | None = None
    pad_token: str | None = None
    unk_token: str | None = None
    # True when the model's own tokenizer prepends a space to the text that starts a sequence.
    prefix_space: bool = False

    @property
    @abc.abstractmethod
    def vocab_size(self) -> int:
        """Number of ids, added special tokens included."""

    @abc.abstractmethod
    def token_to_id(self, token: str) -> int | None:
        """The id of a vocabulary entry (special or not), or None."""

    @abc.abstractmethod
    def id_to_token(self, token_id: int) -> str:
        """The vocabulary entry of an id (a piece such as "▁the" or a special token)."""

    @abc.abstractmethod
    def is_special(self, token_id: int) -> bool:
        """True for special tokens: never produced from text, decoded as their string."""

    @abc.abstractmethod
    def _encode_start(self, text: str) -> list[int]: ...

    @abc.abstractmethod
    def encode_continuation(self, text: str) -> list[int]:
        """Text that continues a sequence, character for character (see the module doc)."""

    @abc.abstractmethod
    def decode(self, ids: Iterable[int]) -> str:
        """Exact inverse of `encode_continuation`; special tokens appear as their strings."""

    @abc.abstractmethod
    def add_special_tokens(self, tokens: Sequence[str]) -> list[int]:
        """Makes each token special, appending the missing ones to the vocabulary; returns ids."""

    @abc.abstractmethod
    def save(self, directory: str) -> None:
        """Writes the tokenizer and a tokenizer_config.json naming its special tokens."""

    def encode(self, text: str, *, add_bos: bool = False) -> list[int]:
        """Text that starts a sequence, as the model's own tokenizer encodes it."""
        ids = self._encode_start(text)
        if add_bos:
            ids = [self._required_id("bos_token"), *ids]
        return ids

    @property
    def bos_id(self) -> int | None:
        return self._role_id("bos_token")

    @property
    def eos_id(self) -> int | None:
        return self._role_id("eos_token")

    @property
    def pad_id(self) -> int | None:
        return self._role_id("pad_token")

    @property
    def unk_id(self) -> int | None:
        return self._role_id("unk_token")

    def _role_id(self, role: str) -> int | None:
        token = getattr(self, role)
        if token is None:
            return None
        token_id = self.token_to_id(token)
        if token_id is None:
            raise ValueError(f"{role}={token!r} is not in the vocabulary of {self!r}")
        return token_id

    def _required_id(self, role: str) -> int:
        token_id = self._role_id(role)
        if token_id is None:
            raise ValueError(f"{self!r} has no {role}; set `{role}` to a token of its vocabulary")
        return token_id

    def _write_config(self, directory: str, **extra) -> None:
        config = {role: getattr(self, role) for role in SPECIAL_ROLES} | extra
        with open(os.path.join(directory, CONFIG_FILE), "w") as f:
            json.dump(config, f, indent=2)


def add_image_token(
    tokenizer: Tokenizer, image_token: str = "<image>", pad_token: str = "<pad>"
) -> int:
    """Adds LLaVA's image placeholder (and a padding token when there is none, as the HF LLaVA
    conversion does: `<image>` = 32000, `<pad>` = 32001 for Llama-2). Returns the image id."""
    (image_id,) = tokenizer.add_special_tokens([image_token])
    if tokenizer.pad_token is None:
        tokenizer.add_special_tokens([pad_token])
        tokenizer.pad_token = pad_token
    return image_id


def tokenizer_for(path: str, *, image_token: bool, roles: dict | None = None) -> Tokenizer:
    """The tokenizer at `path` as a run uses it: its special-token `roles` ({"eos_token":
    "</s>", ...}: config.data.tokenizer_roles, over its tokenizer_config.json), and for a VLM
    (`image_token`) LLaVA's <image> placeholder when it has none. Training, evaluation and
    export all load it this way."""
    tokenizer = load_tokenizer(path, **dict(roles or {}))
    if image_token and tokenizer.token_to_id("<image>") is None:
        add_image_token(tokenizer)
    return tokenizer


def load_tokenizer(path: str, **special_tokens: str | None) -> Tokenizer:
    """Loads `tokenizer.json` or a sentencepiece `.model` file, or a directory holding one
    (tokenizer.json preferred, then tokenizer.model, then spiece.model: SigLIP's and T5's
    name). Special-token roles (bos_token, eos_token, pad_token, unk_token) come from keyword
    arguments, else the tokenizer_config.json beside the file, else (sentencepiece) the model
    itself."""
    path = os.fspath(path)
    if storage.path(path).is_dir():  # local or gs://
        for name in TOKENIZER_FILES:
            if (storage.path(path) / name).exists():
                return load_tokenizer(os.path.join(path, name), **special_tokens)
        raise FileNotFoundError(f"no {' or '.join(TOKENIZER_FILES)} in {path}")
    unknown = set(special_tokens) - set(SPECIAL_ROLES)
    if unknown:
        raise TypeError(f"unknown special-token roles {sorted(unknown)}; use {SPECIAL_ROLES}")
    roles = _roles_from_config(os.path.dirname(path)) | special_tokens
    if path.endswith(".json"):
        return HFTokenizer(storage.path(path).read_text(), **roles)
    if path.endswith(".model"):
        return SentencePieceTokenizer(storage.path(path).read_bytes(), **roles)
    raise ValueError(f"{path}: expected a tokenizer.json or a sentencepiece .model file")


def _roles_from_config(directory: str) -> dict[str, str | None]:
    """Special-token roles from tokenizer_config.json / special_tokens_map.json, if present."""
    roles: dict[str, str | None] = {}
    for name in ("special_tokens_map.json", CONFIG_FILE):  # the latter wins
        file = storage.path(directory) / name
        if file.exists():
            config = json.loads(file.read_text())
            for role in SPECIAL_ROLES:
                if role in config:
                    value = config[role]
                    roles[role] = value["content"] if isinstance(value, dict) else value
    return roles


# -- HF tokenizer.json ----------------------------------------------------------------------


class HFTokenizer(Tokenizer):
    """A `tokenizers` pipeline from a tokenizer.json string. Special-token roles are given by
    name (tokenizer.json does not record them; `load_tokenizer` reads tokenizer_config.json).

    Two copies of the pipeline: the original one (`encode`, `save`) and one with every
    prefix-space step removed (`encode_continuation`, `decode`).
    """

    def __init__(self, tokenizer_json: str, **roles: str | None):
        spec = json.loads(tokenizer_json)
        self.prefix_space = _remove_prefix_space(spec)
        self._native = tokenizers.Tokenizer.from_str(tokenizer_json)
        self._raw = tokenizers.Tokenizer.from_str(json.dumps(spec))
        for pipeline in (self._native, self._raw):
            pipeline.encode_special_tokens = True  # "<s>" in text is text, not the BOS
        for role in SPECIAL_ROLES:
            setattr(self, role, roles.get(role))

    def __repr__(self) -> str:
        return f"HFTokenizer(vocab_size={self.vocab_size})"

    def __setstate__(self, state: dict) -> None:  # a pickled pipeline forgets the flag
        self.__dict__.update(state)
        for pipeline in (self._native, self._raw):
            pipeline.encode_special_tokens = True

    @property
    def vocab_size(self) -> int:
        return self._raw.get_vocab_size(with_added_tokens=True)

    def token_to_id(self, token: str) -> int | None:
        return self._raw.token_to_id(token)

    def id_to_token(self, token_id: int) -> str:
        token = self._raw.id_to_token(token_id)
        if token is None:
            raise ValueError(f"id {token_id} is outside the vocabulary ({self.vocab_size})")
        return token

    def is_special(self, token_id: int) -> bool:
        added = self._raw.get_added_tokens_decoder().get(token_id)
        return added is not None and added.special

    def _encode_start(self, text: str) -> list[int]:
        return self._native.encode(text, add_special_tokens=False).ids

    def encode_continuation(self, text: str) -> list[int]:
        return self._raw.encode(text, add_special_tokens=False).ids

    def decode(self, ids: Iterable[int]) -> str:
        ids = [int(i) for i in ids]
        for token_id in ids:
            self.id_to_token(token_id)  # range check: tokenizers silently skips unknown ids
        return self._raw.decode(ids, skip_special_tokens=False)

    def add_special_tokens(self, tokens: Sequence[str]) -> list[int]:
        for pipeline in (self._native, self._raw):
            pipeline.add_special_tokens(
                [tokenizers.AddedToken(t, special=True, normalized=False) for t in tokens]
            )
        return [self._raw.token_to_id(t) for t in tokens]

    def save(self, directory: str) -> None:
        os.makedirs(directory, exist_ok=True)
        self._native.save(os.path.join(directory, "tokenizer.json"))
        self._write_config(directory, tokenizer_class="PreTrainedTokenizerFast")


def _remove_prefix_space(spec: dict) -> bool:
    """Edits a tokenizer.json dict in place so nothing is prepended to the text and decoding
    strips nothing; returns whether the original pipeline prepended a space.

    Covers the pipelines HF writes: Metaspace pre-tokenizer/decoder (prepend_scheme or the
    older add_prefix_space), a Prepend("▁") normalizer, ByteLevel(add_prefix_space=True), and
    the Strip decoder that removes the prepended space of Llama's converted tokenizers.
    """
    prepends = False
    normalizers = _components(spec, "normalizer", "normalizers")
    kept = [n for n in normalizers if n["type"] != "Prepend"]
    prepends |= len(kept) < len(normalizers)
    _set_components(spec, "normalizer", "normalizers", kept)
    for pre in _components(spec, "pre_tokenizer", "pretokenizers"):
        if pre["type"] == "Metaspace":
            prepends |= pre.get("prepend_scheme", "always") != "never" or pre.get(
                "add_prefix_space", False
            )
            pre["prepend_scheme"] = "never"
            pre.pop("add_prefix_space", None)
        elif pre["type"] == "ByteLevel" and pre.get("add_prefix_space"):
            prepends = True
            pre["add_prefix_space"] = False
    decoders = _components(spec, "decoder", "decoders")
    for dec in decoders:
        if dec["type"] == "Metaspace":
            dec["prepend_scheme"] = "never"
            dec.pop("add_prefix_space", None)
    kept = [d for d in decoders if not (d["type"] == "Strip" and d.get("start", 0) > 0)]
    _set_components(spec, "decoder", "decoders", kept)
    return bool(prepends)


def _components(spec: dict, key: str, seq_key: str) -> list[dict]:
    part = spec.get(key)
    if part is None:
        return []
    return list(part[seq_key]) if part["type"] == "Sequence" else [part]


def _set_components(spec: dict, key: str, seq_key: str, parts: list[dict]) -> None:
    if spec.get(key) is not None and spec[key]["type"] == "Sequence":
        spec[key][seq_key] = parts
    else:
        spec[key] = parts[0] if parts else None


# -- sentencepiece -----------------------------------------------------------------------------

_PIECE = sp_pb2.ModelProto.SentencePiece


class SentencePieceTokenizer(Tokenizer):
    """A sentencepiece model (serialized ModelProto bytes). Roles default to the model's own
    bos/eos/unk/pad ids.

    Two processors: the original model (`encode`, `save`) and a copy with the dummy prefix
    and whitespace folding switched off (`encode_continuation`, `decode`), as HF's
    LlamaTokenizer(legacy=False) does. Special tokens are CONTROL pieces, which sentencepiece
    never produces from text; added ones are appended to the model's pieces.
    """

    def __init__(self, model_proto: bytes, **roles: str | None):
        self._proto = sp_pb2.ModelProto()
        self._proto.ParseFromString(model_proto)
        self.prefix_space = self._proto.normalizer_spec.add_dummy_prefix
        self._rebuild()
        for role, sp_id in zip(SPECIAL_ROLES, ("bos_id", "eos_id", "pad_id", "unk_id")):
            default_id = getattr(self._raw, sp_id)()
            default = self._raw.id_to_piece(default_id) if default_id >= 0 else None
            setattr(self, role, roles.get(role, default))

    def __repr__(self) -> str:
        return f"SentencePieceTokenizer(vocab_size={self.vocab_size})"

    def __getstate__(self) -> dict:  # into grain worker processes: the processors do not pickle
        state = {k: v for k, v in self.__dict__.items() if k not in ("_proto", "_native", "_raw")}
        return state | {"_proto": self._proto.SerializeToString()}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state, _proto=sp_pb2.ModelProto.FromString(state["_proto"]))
        self._rebuild()

    def _rebuild(self) -> None:
        self._native = spm.SentencePieceProcessor(model_proto=self._proto.SerializeToString())
        raw = sp_pb2.ModelProto()
        raw.CopyFrom(self._proto)
        raw.normalizer_spec.add_dummy_prefix = False
        raw.normalizer_spec.remove_extra_whitespaces = False
        self._raw = spm.SentencePieceProcessor(model_proto=raw.SerializeToString())

    @property
    def vocab_size(self) -> int:
        return self._raw.get_piece_size()

    def token_to_id(self, token: str) -> int | None:
        token_id = self._raw.piece_to_id(token)
        # piece_to_id answers unk_id for unknown pieces
        return token_id if self._raw.id_to_piece(token_id) == token else None

    def id_to_token(self, token_id: int) -> str:
        if not 0 <= token_id < self.vocab_size:
            raise ValueError(f"id {token_id} is outside the vocabulary ({self.vocab_size})")
        return self._raw.id_to_piece(token_id)

    def is_special(self, token_id: int) -> bool:
        return self._raw.is_control(token_id) or self._raw.is_unknown(token_id)

    def _encode_start(self, text: str) -> list[int]:
        return self._native.encode(text)

    def encode_continuation(self, text: str) -> list[int]:
        return self._raw.encode(text)

    def decode(self, ids: Iterable[int]) -> str:
        # sentencepiece drops control tokens when decoding; write them out ourselves
        out, run = [], []
        for token_id in (int(i) for i in ids):
            if self.is_special(self._checked(token_id)):
                out += [self._raw.decode(run), self._raw.id_to_piece(token_id)]
                run = []
            else:
                run.append(token_id)
        return "".join(out) + self._raw.decode(run)

    def _checked(self, token_id: int) -> int:
        self.id_to_token(token_id)
        return token_id

    def add_special_tokens(self, tokens: Sequence[str]) -> list[int]:
        for token in tokens:
            token_id = self.token_to_id(token)
            if token_id is None:
                self._proto.pieces.add(piece=token, score=0.0, type=_PIECE.CONTROL)
            elif not self.is_special(token_id):  # e.g. a USER_DEFINED piece: stop matching it
                self._proto.pieces[token_id].type = _PIECE.CONTROL
        self._rebuild()
        return [self.token_to_id(t) for t in tokens]

    def save(self, directory: str) -> None:
        os.makedirs(directory, exist_ok=True)
        with open(os.path.join(directory, "tokenizer.model"), "wb") as f:
            f.write(self._proto.SerializeToString())
        self._write_config(directory)


def caption_ids(tokenizer: Tokenizer, text: str, max_length: int) -> list[int]:
    """A caption for a contrastive text tower: its tokens then EOS (the tower pools the last
    real token), cut to max_length with EOS kept. Training and negative mining both use it."""
    return tokenizer.encode(text)[: max_length - 1] + [tokenizer.eos_id]


def text_tower_ids(tokenizer: Tokenizer, text: str, *, family: str, max_length: int) -> list[int]:
    """A prompt for a contrastive text tower, as its family's tokenizer makes it (the
    TextTowerConfig `family`):

    - "fgjax": `caption_ids` (the tokens then EOS), as fgjax trains its towers.
    - "clip": BOS, the tokens, EOS, cut to max_length (77) with both kept, as CLIPTokenizer
      with truncation; its padding never reaches the causal tower's EOS, so none is added.
    - "siglip": as SiglipTokenizer with padding="max_length", truncation=True: the text
      canonicalized (lower case, ASCII punctuation removed, whitespace runs folded: its
      `canonicalize_text`, from big_vision's zero-shot prompt engineering), no BOS, the tokens
      then EOS (kept when cut), padded with the pad token (else EOS) to exactly max_length
      (64): the tower pools the final position and was trained on padded input.
    """
    if family == "fgjax":
        return caption_ids(tokenizer, text, max_length)
    if family == "clip":
        body = tokenizer.encode(text)[: max_length - 2]
        return [tokenizer._required_id("bos_token"), *body, tokenizer._required_id("eos_token")]
    if family == "siglip":
        eos = tokenizer._required_id("eos_token")
        ids = [*tokenizer.encode(_siglip_canonical(text))[: max_length - 1], eos]
        pad = tokenizer.pad_id if tokenizer.pad_id is not None else eos
        return ids + [pad] * (max_length - len(ids))
    raise ValueError(f"text tower family {family!r}; use 'fgjax', 'clip' or 'siglip'")


def _siglip_canonical(text: str) -> str:
    """SiglipTokenizer.canonicalize_text (do_lower_case=True, its default)."""
    text = text.lower().translate(str.maketrans("", "", string.punctuation))
    return re.sub(r"\s+", " ", text).strip()
