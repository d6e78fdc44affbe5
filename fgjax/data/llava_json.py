"""LLaVA-format image-text data: LLaVA-558K captions and the LLaVA-665K conversation mix.

A file is a JSON list of rows (or JSONL, one row per line):
    {"id": "004539375", "image": "00453/004539375.jpg",
     "conversations": [{"from": "human", "value": "<image>\\nRender a clear ... photo."},
                       {"from": "gpt", "value": "select luxury furniture 3 - inch gel ..."}]}
665K rows have several turns; rows without "image" are text-only (ShareGPT). Image paths are
relative to an image root.

Bad input is skipped and counted, each with its row number and id logged, never dropped
silently: malformed rows and missing image files when the file is read, corrupt images when
a row is read (each row counted once, however often it is read). `report()` gives the counts;
`strict=True` raises `BadInputError` instead. A file with no usable row raises
`BadInputError` naming the file and why.
"""

from __future__ import annotations

import io
import json
import logging
import os

import numpy as np
from PIL import Image

from fgjax import storage
from fgjax.data.skips import BadInputError, SkipCounter

log = logging.getLogger(__name__)

MALFORMED, MISSING_IMAGE, CORRUPT_IMAGE = "malformed row", "missing image", "corrupt image"
__all__ = ["BadInputError", "LlavaJsonSource", "load_image"]


class LlavaJsonSource:
    """Random-access rows of a LLaVA JSON/JSONL file (a grain data source: `len` and
    `[index]`).

    `source[i]` is {"id": str, "image": u8[H, W, 3] or None (text-only row),
    "conversations": list of {"from", "value"}}; or None when the row's image turns out to be
    corrupt (counted; grain skips None elements). Images are decoded when a row is read.
    Rows are kept as compact JSON bytes, cheap to hold and to share with worker processes.
    """

    def __init__(
        self,
        path: str,
        image_root: str | None = None,
        *,
        strict: bool = False,
        check_files: bool = True,
    ):
        self.path, self.image_root = os.fspath(path), image_root
        self._remote_images: set[str] | None = None
        self.name = os.path.basename(path)
        self.skipped = SkipCounter(self.name, strict)
        self.num_rows_in_file = 0
        ids, labels, images, blobs = [], [], [], []
        for label, row in self._read_rows():
            self.num_rows_in_file += 1
            parsed = self._validate(label, row, check_files)
            if parsed is not None:
                ids.append(parsed[0])
                labels.append(f"{label} (id={parsed[0]!r})")
                images.append(parsed[1])
                blobs.append(json.dumps(row["conversations"], separators=(",", ":")).encode())
        self._ids = np.array(ids, dtype=object)
        self._labels = np.array(labels, dtype=object)
        self._images = np.array(images, dtype=object)
        self._offsets = np.cumsum([0] + [len(b) for b in blobs], dtype=np.int64)
        self._blob = np.frombuffer(b"".join(blobs), np.uint8)
        if not len(self):
            raise BadInputError(
                f"{path} has no usable rows ({self.summary()}); LLaVA data is a JSON list of "
                'rows or JSONL with one row per line, each {"id", "image", "conversations"}'
            )
        if self.skipped.counts:
            log.warning("%s", self.summary())

    def __len__(self) -> int:
        return len(self._ids)

    def __getitem__(self, index: int) -> dict | None:
        index = int(index)
        if not -len(self) <= index < len(self):
            raise IndexError(f"row {index} of {len(self)}")
        index %= len(self)
        start, end = self._offsets[index], self._offsets[index + 1]
        conversations = json.loads(self._blob[start:end].tobytes())
        image = None
        if self._images[index] is not None:
            try:
                image = load_image(self.image_path(index))
            except (OSError, ValueError, Image.DecompressionBombError) as error:
                self.skipped.skip(CORRUPT_IMAGE, self._labels[index], f"{error}")
                return None
        return {"id": self._ids[index], "image": image, "conversations": conversations}

    def __repr__(self) -> str:
        return f"LlavaJsonSource({self.path!r}, rows={len(self)})"

    def image_path(self, index: int) -> str | None:
        """The file of row `index`'s image (None for a text-only row)."""
        image = self._images[index]
        return None if image is None else os.path.join(self.image_root, image)

    def report(self) -> dict[str, int]:
        """Rows read from the file, rows kept, and skipped rows by reason (those found on
        read, corrupt images, count in the process that read them)."""
        return {"rows": self.num_rows_in_file, "kept": len(self)} | dict(self.skipped.counts)

    def summary(self) -> str:
        counts = ", ".join(f"{k} {v}" for k, v in sorted(self.skipped.counts.items())) or "none"
        return f"{self.name}: {self.num_rows_in_file} rows, {len(self)} kept; skipped: {counts}"

    def _read_rows(self):
        """Yields (label, row); a JSON list must parse as a whole, JSONL line by line."""
        text = storage.path(self.path).read_text(encoding="utf-8")
        if not text.strip():
            raise BadInputError(f"{self.path} is empty")
        if text.lstrip().startswith("["):
            try:
                rows = json.loads(text)
            except json.JSONDecodeError as error:
                raise BadInputError(f"{self.path} is not valid JSON: {error}") from error
            for number, row in enumerate(rows):
                yield f"#{number}", row
            return
        if text.lstrip().startswith("{") and "\n" in text.strip():
            try:  # one JSON object spread over lines: not JSONL, whose rows are one line each
                whole = json.loads(text)
            except json.JSONDecodeError:
                whole = None
            if isinstance(whole, dict):
                raise BadInputError(
                    f"{self.path} holds one JSON object over several lines; LLaVA data is a JSON "
                    "list of rows ([{...}, ...]) or JSONL with one row per line"
                )
        for number, line in enumerate(text.splitlines(), start=1):
            if line.strip():
                try:
                    yield f"line {number}", json.loads(line)
                except json.JSONDecodeError as error:
                    self.skipped.skip(MALFORMED, f"line {number}", f"invalid JSON: {error}")

    def _validate(self, label, row, check_files) -> tuple[str, str | None] | None:
        """(id, image path or None), or None after counting a skipped row."""
        if not isinstance(row, dict):
            self.skipped.skip(MALFORMED, label, f"expected an object, got {type(row).__name__}")
            return None
        row_id = str(row.get("id", label))
        label = f"{label} (id={row_id!r})"
        problem = _conversation_problem(row.get("conversations"))
        image = row.get("image")
        if problem is None and image is not None and not (isinstance(image, str) and image):
            problem = f"'image' must be a file path, got {image!r} (one image per row)"
        if problem is not None:
            self.skipped.skip(MALFORMED, label, problem)
            return None
        if image is not None:
            if self.image_root is None:
                raise ValueError(f"{self.path} has image rows: pass image_root")
            file = os.path.join(self.image_root, image)
            if check_files and not self._image_exists(image):
                self.skipped.skip(MISSING_IMAGE, label, f"no file {file}")
                return None
        return row_id, image

    def _image_exists(self, image: str) -> bool:
        """Whether image_root holds `image`; a bucket is listed once (a request per row would
        take hours on LLaVA-665K), a local folder is asked per file."""
        if not storage.is_remote(self.image_root):
            return os.path.isfile(os.path.join(self.image_root, image))
        if self._remote_images is None:
            self._remote_images = set(storage.relative_files(self.image_root))
        return os.path.normpath(image) in self._remote_images


def _conversation_problem(turns) -> str | None:
    if not isinstance(turns, list) or not turns:
        return "'conversations' must be a non-empty list"
    for turn in turns:
        if not (
            isinstance(turn, dict)
            and isinstance(turn.get("from"), str)
            and isinstance(turn.get("value"), str)
        ):
            return f"turn {turn!r} is not {{'from': str, 'value': str}}"
    return None


def load_image(path: str) -> np.ndarray:
    """u8[H, W, 3]: the whole file (local or gs://) decoded (a truncated file raises OSError),
    as RGB."""
    if storage.is_remote(path):
        path = io.BytesIO(storage.path(path).read_bytes())
    with Image.open(path) as image:
        image.load()
        return np.asarray(image.convert("RGB"))
