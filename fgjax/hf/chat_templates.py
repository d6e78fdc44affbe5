"""Jinja chat templates (the `chat_template` of Hugging Face tokenizers and processors) that
render a conversation as fgjax's prompt templates do (fgjax/data/templates.py).

`chat_template(name, bos=...)` returns the template for an fgjax template name. Messages are
HF's `[{"role": "system" | "user" | "assistant", "content": str | [{"type": "image"},
{"type": "text", "text": ...}]}]`; a user turn holding an image renders as fgjax renders
LLaVA's `<image>` placeholder: `<image>\\n` then the turn's text with the placeholder removed
and stripped (Qwen2.5-VL's layout, `image_layout="qwen_vl"`: `<|vision_start|><|image_pad|>
<|vision_end|>` then the text, as its own chat template writes an image).
`add_generation_prompt=True` ends with the assistant header ("... ASSISTANT:"). The HF
processor then expands `<image>` (`<|image_pad|>`) to the image tokens. A rendered string,
tokenized by the exported tokenizer (which splits at special tokens, as fgjax tokenizes span
by span), gives the token ids fgjax trained on; tests/export/test_chat_templates.py checks
every template.
"""

from __future__ import annotations

import dataclasses
import json

from fgjax.data import templates


def _lit(text: str | None) -> str:
    """A Jinja literal (JSON string escapes are valid Jinja escapes)."""
    return "none" if text is None else json.dumps(text)


@dataclasses.dataclass(frozen=True)
class _Format:
    """Per-template Jinja pieces: `user` renders a user turn from `content` (the rendered
    content), `ns.turn` (user-turn index) and `ns.system`; `header` opens the reply."""

    user: str
    header: str


def _when(condition: str, text: str) -> str:
    return f"{{%- if {condition} -%}}{{{{ {text} }}}}{{%- endif -%}}"


_FIRST_WITH_SYSTEM = "ns.turn == 0 and ns.system"
_FORMATS = {
    "plain": _Format(_when("c.image", _lit("<image>")), ""),
    "vicuna_v1": _Format(
        _when(_FIRST_WITH_SYSTEM, "ns.system + ' '") + "{{ 'USER: ' + content }}", " ASSISTANT:"
    ),
    "llama2": _Format(
        _when("ns.turn > 0", "bos_token")
        + "{{ '[INST] ' }}"
        + _when(_FIRST_WITH_SYSTEM, _lit("<<SYS>>\n") + " + ns.system + " + _lit("\n<</SYS>>\n\n"))
        + "{{ content }}",
        " [/INST]",
    ),
    "mistral": _Format(
        "{{ '[INST] ' }}"
        + _when(_FIRST_WITH_SYSTEM, "ns.system + " + _lit("\n\n"))
        + "{{ content }}",
        " [/INST]",
    ),
    "chatml": _Format(
        f"{{%- if ns.turn > 0 -%}}{{{{ {_lit(chr(10))} }}}}{{%- elif ns.system -%}}"
        f"{{{{ {_lit(templates.IM_START + 'system' + chr(10))} + ns.system + "
        f"{_lit(templates.IM_END + chr(10))} }}}}{{%- endif -%}}"
        f"{{{{ {_lit(templates.IM_START + 'user' + chr(10))} + content + "
        f"{_lit(templates.IM_END + chr(10))} }}}}",
        f"{templates.IM_START}assistant\n",
    ),
    "gemma": _Format(
        _when("ns.turn > 0", _lit("\n"))
        + f"{{{{ {_lit(templates.START_OF_TURN + 'user' + chr(10))} }}}}"
        + _when(_FIRST_WITH_SYSTEM, "ns.system + " + _lit("\n\n"))
        + f"{{{{ content + {_lit(templates.END_OF_TURN + chr(10))} }}}}",
        f"{templates.START_OF_TURN}model\n",
    ),
    "paligemma": _Format(f"{{{{ content + {_lit(chr(10))} }}}}", ""),
}

# What an image and the turn's text (`rest`, the placeholder removed) become, by image layout
# (fgjax.data.conversation)
_IMAGE_CONTENT = {
    "inline": "'<image>' + ('\\n' + rest if rest else '')",
    "qwen_vl": "'<|vision_start|><|image_pad|><|vision_end|>' + rest",
}
# The content of a user turn: `c.text` (its text) and `c.image` (whether it holds an image),
# then `content` as fgjax renders it.
_CONTENT = (
    "{%- set c = namespace(text='', image=false) -%}"
    "{%- if message['content'] is string -%}"
    "{%- set c.text = message['content'] -%}{%- set c.image = '<image>' in c.text -%}"
    "{%- else -%}{%- for item in message['content'] -%}"
    "{%- if item['type'] == 'image' -%}{%- set c.image = true -%}"
    "{%- elif item['type'] == 'text' -%}{%- set c.text = c.text + item['text'] -%}{%- endif -%}"
    "{%- endfor -%}{%- endif -%}"
    "{%- if c.image -%}{%- set rest = c.text.replace('<image>', '').strip() -%}"
    "{%- set content = IMAGE_CONTENT -%}"
    "{%- else -%}{%- set content = c.text -%}{%- endif -%}"
)
_TEXT = (
    "{%- set t = namespace(text='') -%}"
    "{%- if message['content'] is string -%}{%- set t.text = message['content'] -%}"
    "{%- else -%}{%- for item in message['content'] -%}{%- if item['type'] == 'text' -%}"
    "{%- set t.text = t.text + item['text'] -%}{%- endif -%}{%- endfor -%}{%- endif -%}"
)


def chat_template(name: str, *, bos: bool, image_layout: str = "inline") -> str:
    """The Jinja chat template of fgjax template `name`. bos: render the tokenizer's BOS first
    (when the template starts with BOS and the tokenizer does not add it by itself);
    image_layout: how an image is written ("inline": LLaVA's, "qwen_vl": Qwen2.5-VL's)."""
    if name not in _FORMATS:
        raise ValueError(
            f"no chat template for prompt template {name!r}; known: {sorted(_FORMATS)}"
        )
    if image_layout not in _IMAGE_CONTENT:
        raise ValueError(f"no chat template for image_layout {image_layout!r}")
    template, fmt = templates.get_template(name), _FORMATS[name]
    end = "eos_token" if template.end == "eos" else _lit(template.end)
    reply = f"{_lit(fmt.header + template.reply_prefix)} + t.text + {_lit(template.reply_suffix)} + {end}"
    return (
        f"{{%- set ns = namespace(system={_lit(template.system)}, turn=0) -%}}"
        "{%- set start = 0 -%}"
        "{%- if messages and messages[0]['role'] == 'system' -%}"
        "{%- set message = messages[0] -%}" + _TEXT + "{%- set ns.system = t.text -%}"
        "{%- set start = 1 -%}{%- endif -%}"
        + ("{{ bos_token }}" if bos else "")
        + "{%- for message in messages[start:] -%}"
        "{%- if message['role'] == 'user' -%}"
        + _CONTENT.replace("IMAGE_CONTENT", _IMAGE_CONTENT[image_layout])
        + fmt.user
        + "{%- set ns.turn = ns.turn + 1 -%}"
        "{%- elif message['role'] == 'assistant' -%}" + _TEXT + f"{{{{ {reply} }}}}"
        "{%- else -%}{{ raise_exception('roles must be system (first), user or assistant') }}"
        "{%- endif -%}{%- endfor -%}"
        + f"{{%- if add_generation_prompt -%}}{{{{ {_lit(fmt.header)} }}}}{{%- endif -%}}"
    )
