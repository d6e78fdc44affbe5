"""The study's run plan: which data each stage trains on."""

from pathlib import Path

import pytest

from configs.study import mini
from fgjax.study import stages
from fgjax.train.data import make_source


def test_contrastive_encoder_trains_on_named_pairs_and_alignment_on_raw_alt_text():
    study = mini.get_config("steps_scale=0.02")
    study.train_size = 300
    units = stages.plan(study, 0, Path("/nonexistent/seed0"), Path("/nonexistent/tok"), 128, 3)
    by_name = {u.name: u for u in units}
    encoder = make_source(by_name["stage 0: contrastive encoder"].config.data.sources[0])
    assert 60 < len(encoder) < 200  # about 40% of 300 pairs name the class
    for i in range(len(encoder)):
        assert encoder.data["caption_kind"][encoder.indices[i]] == "name"
    align = [u for u in units if u.name.startswith("stage 1")]
    assert len(align) == 8
    for unit in align:
        source = make_source(unit.config.data.sources[0])
        assert len(source) == 300 and source.indices is None


def test_negatives_are_mined_by_the_base_contrastive_model_as_the_paper_mines_with_clip():
    study = mini.get_config("steps_scale=0.02")
    root = Path("/nonexistent/seed0")
    units = [u for u in stages.plan(study, 0, root, Path("/tok"), 128, 3) if u.kind == "eval"]
    assert len(units) == 8
    for unit in units:
        assert unit.config.negatives.model == f"run:{root}/stage0/encoder@{study.encoder.base_step}"
    study.eval.negatives_from = "upgraded"
    assert stages.eval_run(study, root, Path("/tok"), units[0].variant).config.negatives.model == (
        f"run:{root}/stage0/encoder"
    )
    study.eval.negatives_from = "best"
    with pytest.raises(ValueError, match="negatives_from='best'"):
        stages.eval_run(study, root, Path("/tok"), units[0].variant)
