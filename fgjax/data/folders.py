"""A user's own labelled images as a folder: ROOT/<class name>/<image files>, read by training
(folder_source.FolderSource) and evaluation (evaluate.datasets, source "folder") alike."""

from __future__ import annotations

from collections.abc import Sequence

from fgjax import storage

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")


def list_image_folder(
    root, class_names: Sequence[str] | None = None, what: str = "image folder"
) -> tuple[tuple[str, ...], list, list[int]]:
    """(class names in label order, image files (epath.Path), their labels) of
    ROOT/<class>/<images>, ROOT local or gs://.

    `class_names` fixes the classes and their order, else the sorted folder names are. Every
    class must have its folder and at least one image; other files are ignored."""
    root = storage.path(root)  # local or gs://
    if not root.is_dir():
        raise ValueError(f"{what}: {root} is not a directory")
    folders = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    names = tuple(class_names or folders)
    if not names:
        raise ValueError(
            f"{what}: {root} has no class folders; put each class's images in a folder of its "
            "own, named after the class"
        )
    missing = [c for c in names if c not in folders]
    if missing:
        raise ValueError(f"{what}: no folder {root}/{missing[0]} for class {missing[0]!r} "
                         f"(of {len(missing)} missing)")  # fmt: skip
    files, labels = [], []
    for label, name in enumerate(names):
        found = sorted(p for p in (root / name).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not found:
            raise ValueError(f"{what}: {root / name} holds no images ({', '.join(IMAGE_SUFFIXES)})")
        files += found
        labels += [label] * len(found)
    return names, files, labels
