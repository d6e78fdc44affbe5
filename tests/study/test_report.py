"""The report's reproduced / not-reproduced lines follow from the numbers (fixed tables)."""

import itertools

import pytest

from fgjax.study import report


def table(fine, general, seeds=(0,), noise=0.0):
    """A full grid whose metrics come from functions of (encoder, llm, pretrain_llm)."""
    rows = []
    for seed in seeds:
        for enc, llm, pre in itertools.product(*report.FACTORS.values()):
            v = dict(encoder=enc, llm=llm, pretrain_llm=pre, seed=seed)
            jitter = noise * (1 if (seed + hash((enc, llm, pre))) % 2 else -1)
            v.update(fine_mc5=fine(enc, llm, pre) + jitter, general=general(enc, llm, pre) + jitter)
            v.update(fine_rank_top1=v["fine_mc5"] / 3, fine_rank_top5=v["fine_mc5"] / 2)
            rows.append(v)
    return rows


def up(level):
    return level in ("upgraded", "trained")


def verdicts(rows):
    return [f.reproduced for f in report.findings(rows)]


def test_all_three_findings_reproduced():
    rows = table(
        fine=lambda e, l, p: 30 + 20 * up(e) + 6 * up(l) + 8 * up(p),
        general=lambda e, l, p: 50 + 2 * up(e) + 5 * up(l) + 1 * up(p),
    )
    assert verdicts(rows) == [True, True, True]
    text = report.markdown(rows, [{"encoder": "base", "accuracy": 61.0}], report.findings(rows))
    assert text.count("**REPRODUCED**") == 3 and "| chance | | | 20.0 | 1.0 | 5.0 |" in text
    assert "LLM upgrade: fine +6.0 pts, general +5.0 pts (ratio 1.20" in text
    assert "encoder upgrade: fine +20.0 pts, general +2.0 pts" in text


@pytest.mark.parametrize(
    "fine, general, expected",
    [
        # the LLM helps only general questions -> not "about equally"
        (
            lambda e, l, p: 30 + 20 * up(e) + 1 * up(l) + 8 * up(p),
            lambda e, l, p: 50 + 6 * up(l),
            [False, True, True],
        ),
        # the encoder helps both equally -> not disproportionate
        (
            lambda e, l, p: 30 + 10 * up(e) + 6 * up(l) + 8 * up(p),
            lambda e, l, p: 50 + 10 * up(e) + 5 * up(l),
            [True, False, True],
        ),
        # training the LLM in pretraining hurts fine-grained accuracy
        (
            lambda e, l, p: 30 + 20 * up(e) + 6 * up(l) - 4 * up(p),
            lambda e, l, p: 50 + 5 * up(l),
            [True, True, False],
        ),
        # effects below the 2-point threshold count as nothing
        (
            lambda e, l, p: 30 + 1.5 * up(e) + 1.5 * up(l) + 1.5 * up(p),
            lambda e, l, p: 50 + 1.5 * up(l),
            [False, False, False],
        ),
    ],
)
def test_each_finding_fails_when_the_numbers_say_so(fine, general, expected):
    assert verdicts(table(fine, general)) == expected


def test_noise_across_seeds_raises_the_bar():
    fine = lambda e, l, p: 30 + 5 * up(e) + 5 * up(l) + 3 * up(p)  # noqa: E731
    general = lambda e, l, p: 50 + 5 * up(l)  # noqa: E731
    assert verdicts(table(fine, general, seeds=(0, 1, 2)))[2] is True
    value, stderr = report.effect(table(fine, general, seeds=(0, 1, 2)), "pretrain_llm", "fine_mc5")
    assert value == pytest.approx(3.0) and stderr == pytest.approx(0.0)
    # seeds that disagree: mean effect +3 but seed-to-seed swings of +-6 -> not clear
    rows = table(fine, general, seeds=(0, 1, 2, 3))
    for r in rows:
        if r["pretrain_llm"] == "trained":
            r["fine_mc5"] += 6 if r["seed"] % 2 else -6
    assert report.effect(rows, "pretrain_llm", "fine_mc5")[1] > 1.5
    assert verdicts(rows)[2] is False


def test_files_are_written(tmp_path):
    rows = table(
        fine=lambda e, l, p: 30 + 20 * up(e), general=lambda e, l, p: 50 + 5 * up(l), seeds=(0, 1)
    )
    text, found = report.write_all(tmp_path, rows, [{"encoder": "base", "accuracy": 55.0}])
    assert (tmp_path / "results.csv").read_text().count("\n") == 17
    assert "+- " in (tmp_path / "results.md").read_text() and len(found) == 3
    assert (tmp_path / "results.png").stat().st_size > 10_000
