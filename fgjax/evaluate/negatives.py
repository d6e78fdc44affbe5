"""Similarities that pick the hard negative options of multiple-choice questions.

`scores(dataset) -> f32[N, C]`: how similar each example is to each class; the K-1 most similar
wrong classes become its distractors. Two miners, named in every output that uses them:

- ContrastiveMiner ("contrastive:<source>"): cosine between the image embedding and the text
  embedding of a class prompt ("a photo of a {}.") under a ContrastiveModel -- the FOCI /
  Ghosh et al. recipe, with an fgjax-trained image-text model or an imported HF CLIP / SigLIP.
- TaxonomyMiner ("taxonomy:specimens"): the built-in specimens classes' similarity from their
  taxonomy (shared fine cues and family; fgjax.data.specimens.similarity) -- a miner that no
  model of a study trains, so every arm and seed answers the same questions.
- TextMiner ("text:char-ngram-tfidf"), the fallback without an image-text model: cosine
  between character 2..4-gram TF-IDF vectors of the class names (of " name ", so word starts
  and ends count), taken from the example's true class. Deterministic; it finds look-alike
  names ("bright banded moth" / "bright striped moth"), not look-alike images.
"""

from __future__ import annotations

import collections
import functools
import math
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from fgjax.data import images as image_ops
from fgjax.data.tokenizer import text_tower_ids
from fgjax.evaluate.evaluator import DatasetRunner, place_model
from fgjax.evaluate.prompts import pad_prompts
from fgjax.models.partitioning import activation_sharding


class TaxonomyMiner:
    name = "taxonomy:specimens"

    def scores(self, dataset) -> np.ndarray:
        """f32[N, C]: the taxonomy similarity of each example's true class to every class."""
        from fgjax.data import specimens

        if list(dataset.class_names) != specimens.class_names():
            raise ValueError(
                f"the taxonomy miner knows the specimens classes only; {dataset.name!r} has "
                "others: mine with a contrastive model (negatives.model) or by class names"
            )
        return np.asarray(specimens.similarity(), np.float32)[dataset.labels()]


class TextMiner:
    name = "text:char-ngram-tfidf"

    def __init__(self, ngram_sizes: Sequence[int] = (2, 3, 4)):
        self.ngram_sizes = tuple(ngram_sizes)

    def class_similarity(self, class_names: Sequence[str]) -> np.ndarray:
        """f32[C, C] cosine similarity of the names' TF-IDF vectors (smoothed idf, as
        scikit-learn: log((1 + C) / (1 + df)) + 1)."""
        grams = [self._ngrams(name) for name in class_names]
        vocabulary = {g: i for i, g in enumerate(sorted(set().union(*grams)))}
        counts = np.zeros((len(class_names), len(vocabulary)), np.float64)
        for row, name_grams in enumerate(grams):
            for gram, count in name_grams.items():
                counts[row, vocabulary[gram]] = count
        df = (counts > 0).sum(axis=0)
        vectors = counts * (np.log((1 + len(class_names)) / (1 + df)) + 1)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True).clip(1e-12)
        return (vectors @ vectors.T).astype(np.float32)

    def _ngrams(self, name: str) -> collections.Counter:
        text = f" {' '.join(name.lower().split())} "
        return collections.Counter(
            text[i : i + n] for n in self.ngram_sizes for i in range(len(text) - n + 1)
        )

    def scores(self, dataset) -> np.ndarray:
        """f32[N, C]: the similarity of each example's true class to every class."""
        return self.class_similarity(dataset.class_names)[dataset.labels()]


@functools.partial(jax.jit, static_argnames=("graphdef",))
def _embed_images(graphdef, state, images):
    return nnx.merge(graphdef, state).embed_images(images)


@functools.partial(jax.jit, static_argnames=("graphdef",))
def _embed_texts(graphdef, state, tokens, mask):
    return nnx.merge(graphdef, state).embed_texts(tokens, mask)


class ContrastiveMiner:
    """Image-to-class-prompt cosine under a ContrastiveModel.

    encode_text: caption -> token ids as the model was trained. The default follows the text
    tower's `family` (fgjax.data.tokenizer.text_tower_ids): fgjax runs get `caption_ids`, the
    tokens then EOS, as fgjax's contrastive training encodes captions; an HF CLIP (loaded with
    `fgjax.hf.load(..., dual_encoder=True)`) gets BOS + tokens + EOS cut at max_length (77),
    as CLIPTokenizer; an HF SigLIP gets SiglipTokenizer's canonicalized text, tokens + EOS, no
    BOS, padded with the pad token to exactly max_length (64). Rows are then right-padded to
    a common length and masked; the padding never reaches the pooled token (CLIP's tower is
    causal, SigLIP's rows are all max_length long and attend to every position, as HF runs
    it without an attention mask).
    """

    def __init__(
        self,
        model,
        tokenizer,
        *,
        source: str = "model",
        prompt: str = "a photo of a {}.",
        encode_text: Callable[[str], list[int]] | None = None,
        batch_size: int = 8,
        mesh=None,
        progress: bool = True,
    ):
        self.name = f"contrastive:{source}"
        self.prompt = prompt
        self.cfg = model.cfg
        self.encode_text = encode_text or functools.partial(
            text_tower_ids, tokenizer, family=model.cfg.text.family,
            max_length=model.cfg.text.max_length,
        )  # fmt: skip
        self.runner = DatasetRunner(
            image_ops.preprocess_config_for(model.cfg.image),
            batch_size=batch_size,
            mesh=mesh,
            progress=progress,
        )
        self.graphdef, self.state = place_model(model, self.runner.mesh, self.runner.rules)

    def text_embeddings(self, class_names: Sequence[str]) -> np.ndarray:
        """f32[C, E] unit-norm embeddings of the class prompts."""
        limit = self.cfg.text.max_length
        ids = [np.asarray(self.encode_text(self.prompt.format(n))[:limit]) for n in class_names]
        if any(len(i) == 0 for i in ids):
            raise ValueError("a class prompt encodes to no tokens; check the prompt and tokenizer")
        tokens, mask = pad_prompts(ids, bucket=8)
        tokens, mask = tokens[:, :limit], mask[:, :limit]
        out = []
        with activation_sharding(self.runner.mesh, self.runner.rules):
            for start in range(0, len(ids), 256):  # bounded memory for 1,000 classes
                part = slice(start, start + 256)
                out.append(_embed_texts(
                    self.graphdef, self.state,
                    self.runner.constant(tokens[part]), self.runner.constant(mask[part]),
                ))  # fmt: skip
        return np.concatenate([np.asarray(o) for o in out])

    def scores(self, dataset) -> np.ndarray:
        """f32[N, C]: cosine of every image with every class prompt."""
        texts = self.runner.constant(self.text_embeddings(dataset.class_names))

        def compute(batch):
            images = _embed_images(self.graphdef, self.state, self.runner.images(batch))
            return {"scores": jnp.einsum("be,ce->bc", images, texts)}

        out = self.runner.run(dataset, compute, desc="mining negatives")
        return out["scores"]


def hardest_negatives(scores: np.ndarray, labels: np.ndarray, count: int) -> np.ndarray:
    """i32[N, count]: per row the `count` highest-scoring classes other than the label (ties
    broken by class index)."""
    num_classes = scores.shape[1]
    if count >= num_classes:
        raise ValueError(
            f"{count} negatives need more than {count} classes; the dataset has {num_classes}"
        )
    masked = np.array(scores, np.float64)
    masked[np.arange(len(labels)), labels] = -math.inf
    return np.argsort(-masked, axis=1, kind="stable")[:, :count].astype(np.int32)
