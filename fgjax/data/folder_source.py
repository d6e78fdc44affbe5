"""Training records from a user's own image folder (ROOT/<class name>/<images>, fgjax.data.folders):
the class names turned into LLaVA-style conversations, so that one's own labelled images train
both stages without writing a LLaVA JSON file.

    FolderSource(path, kind, class_names=None, caption="a photo of a {}.",
                 question="What type of object is in this photo?", choices=5, seed=0)

kinds:
  captions   [<image>, caption]: stage 1 (alignment), the caption template filled with the
             class name
  classify   "<image>\\n<question>" -> the class name, or (half of the records, when there are
             at least `choices` classes) the class among `choices - 1` other classes as
             lettered multiple choice in LLaVA-1.5's format: stage 2 on classification data
A record's id is "<class>/<file name>"; a corrupt image is skipped and counted once per row,
however many epochs read it (`report()`).
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from fgjax.data.folders import list_image_folder
from fgjax.data.llava_json import load_image
from fgjax.data.skips import SkipCounter
from fgjax.data.specimens_source import LETTERS, MULTIPLE_CHOICE  # LLaVA-1.5's answer formats

KINDS = ("captions", "classify")


class FolderSource:
    def __init__(
        self,
        path: str,
        kind: str,
        *,
        class_names=None,
        caption: str = "a photo of a {}.",
        question: str = "What type of object is in this photo?",
        choices: int = 5,
        seed: int = 0,
        strict: bool = False,
    ):
        if kind not in KINDS:
            raise ValueError(f"folder source kind {kind!r}; use one of {KINDS}")
        self.path, self.kind, self.caption, self.question = path, kind, caption, question
        self.names, self.files, self.labels = list_image_folder(
            path, class_names, f"training folder {path}"
        )
        self.choices, self.seed = min(choices, len(self.names)), seed
        self.skipped = SkipCounter(f"folder {path}", strict)

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> dict | None:
        index = int(index) % len(self)
        file, label = self.files[index], self.labels[index]
        row = f"{file.parent.name}/{file.name}"
        try:
            image = load_image(str(file))
        except (OSError, ValueError, Image.DecompressionBombError) as error:
            self.skipped.skip("corrupt image", row, str(error))
            return None
        name = self.names[label]
        if self.kind == "captions":
            turns = [("<image>", self.caption.format(name))]
        else:
            turns = [self._classify(index, name)]
        conversations = []
        for human, gpt in turns:
            conversations += [{"from": "human", "value": human}, {"from": "gpt", "value": gpt}]
        return {"id": row, "image": image, "conversations": conversations}

    def _classify(self, index: int, name: str) -> tuple[str, str]:
        rng = np.random.default_rng((self.seed, index))
        if self.choices < 2 or rng.random() < 0.5:
            return f"<image>\n{self.question}", name
        others = [n for n in self.names if n != name]
        options = [name] + [others[i] for i in rng.permutation(len(others))[: self.choices - 1]]
        order = rng.permutation(len(options))
        lines = "\n".join(f"{LETTERS[i]}. {options[j]}" for i, j in enumerate(order))
        letter = LETTERS[int(np.flatnonzero(order == 0)[0])]
        prompt = MULTIPLE_CHOICE.format(question=self.question, options=lines)
        return f"<image>\n{prompt}", letter

    def report(self) -> dict[str, int]:
        return {"images": len(self), "classes": len(self.names), **self.skipped.counts}
