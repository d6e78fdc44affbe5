"""The study's run plan: which data each stage trains on."""

from pathlib import Path

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
