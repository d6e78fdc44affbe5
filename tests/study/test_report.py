"""The report's verdicts follow from the numbers: fixed, hand-built tables of 0/1 answers.

Every table is an integer-count construction: each (seed, arm, metric, part) gets exactly
round(accuracy * items) correct answers, at random positions. So point estimates are exact
(up to float rounding) and only the intervals depend on the random positions.
"""

import json
import time

import numpy as np
import pytest

from fgjax.study import readme, report, results, stats
from fgjax.study.results import CLASSIFY, GRID, NOALIGN, PARTS, TWIN, Results, find_arm

N = 300
PART_OF = np.repeat(PARTS, N // len(PARTS))  # str[N]: 100 images per part
GENERAL_CHANCE = {"perception": 1 / 2, "knowledge": 1 / 4, "reasoning": 1 / 3}
FAST = dict(bootstrap_samples=500)  # enough for intervals this far from zero


def up(level):
    return float(level in ("upgraded", "trained"))


def fine(levels, seed):
    """Encoder +20 (25 chance-normalised points), LLM +8 (10), LLM trained in pretraining +8;
    without alignment 40; classification data +18 over its twin (66 -> 84: 75% of the gap to
    the probe's 90)."""
    if levels["pretrain"] == "none":
        return 0.40
    acc = 0.30 + 0.20 * up(levels["encoder"]) + 0.08 * up(levels["llm"])
    acc += 0.08 * up(levels["pretrain"])
    return acc + 0.18 * (levels["instruct"] == "classify")


def general(levels, seed, part):
    """The LLM helps knowledge and reasoning, hardly perception; the encoder a little."""
    base = {"perception": 0.80, "knowledge": 0.45, "reasoning": 0.50}[part]
    llm = {"perception": 0.02, "knowledge": 0.12, "reasoning": 0.10}[part]
    return base + 0.02 * up(levels["encoder"]) + llm * up(levels["llm"])


def blank(levels, seed, part):
    """With a blank image: perception at chance, knowledge as with the image."""
    return GENERAL_CHANCE["perception"] if part == "perception" else general(levels, seed, part)


def exactly(rng, n, accuracy):
    """f32[n] with exactly round(accuracy * n) ones, at random positions."""
    out = np.zeros(n, np.float32)
    out[rng.permutation(n)[: int(round(min(max(accuracy, 0.0), 1.0) * n))]] = 1
    return out


def build(fine=fine, general=general, blank=blank, seeds=(0, 1, 2), probe5=0.90, rng=0):
    """A complete Results; arms in shuffled order under names the report must not rely on."""
    rng = np.random.default_rng(rng)
    levels = [*GRID, NOALIGN, CLASSIFY]
    arms = {f"arm{i}": dict(levels[i]) for i in rng.permutation(len(levels))}
    S, A = len(seeds), len(arms)
    correct = {m: np.zeros((S, A, N), np.float32) for m in results.METRICS}
    for s, seed in enumerate(seeds):
        for a, lv in enumerate(arms.values()):
            for readout, shift in (("letter", 0.0), ("cloze", -0.05)):
                correct[f"fine_{readout}"][s, a] = exactly(rng, N, fine(lv, seed) + shift)
                for part in PARTS:
                    where = PART_OF == part
                    for q, acc in (("general", general), ("blank", blank)):
                        correct[f"{q}_{readout}"][s, a, where] = exactly(
                            rng, where.sum(), acc(lv, seed, part) + shift
                        )
    part_chance = np.array([GENERAL_CHANCE[p] for p in PART_OF], np.float32)
    chance = {m: part_chance for m in results.METRICS if not m.startswith("fine")}
    chance |= {
        "fine_letter": np.full(N, 0.2, np.float32),
        "fine_cloze": np.full(N, 0.2, np.float32),
    }
    return Results(
        seeds=list(seeds),
        arms=arms,
        parts=PART_OF.copy(),
        correct=correct,
        chance=chance,
        probe5={"base": exactly(rng, N, 0.75), "upgraded": exactly(rng, N, probe5)},
        probe100={"base": 40.0, "upgraded": 55.0},
        info=dict(machine="test machine", commit="abc1234", date="2026-01-01",
                  seconds={"stage0": 60.0, "eval": 30.0}, wall_seconds=95.0),
    )  # fmt: skip


def index(r, levels):
    return list(r.arms).index(find_arm(r, **levels))


def verdicts(found):
    return [f.verdict for f in found]


R_, NR, NJ = report.REPRODUCED, report.NOT_REPRODUCED, report.NOT_JUDGED


def test_all_four_findings_reproduced_with_the_default_analysis():
    r = build()
    r.validate()
    start = time.perf_counter()
    ctl, found = report.judge(r)  # 2000 replicates x 3 seeds x 300 images
    assert time.perf_counter() - start < 10  # a few hundred ms on one core
    assert verdicts(found) == [R_] * 4
    assert [f.secondary for f in found] == [R_] * 4  # cloze: every accuracy 5 points lower
    assert all(c.passed for by_arm in ctl.values() for c in by_arm.values())
    # perception: (80 - 50) / (1 - 0.5) = 60 chance-normalised points, exactly (integer counts)
    base = find_arm(r, **GRID[0])
    assert ctl["letter"][base].effect.point == pytest.approx(60.0, abs=1e-4)
    # finding 1's ratio: 10 points on fine over 8 / (1 - mean chance) on general
    mean_chance = np.mean(list(GENERAL_CHANCE.values()))
    assert f"df/dg: {0.08 / 0.8 / (0.08 / (1 - mean_chance)):.2f}" in found[0].lines[2]
    assert "closes 75% of the gap" in found[3].reason


def test_main_effects_come_from_factor_levels():
    r = build()
    effect = stats.main_effect(r, "llm", "fine_letter")
    assert len(effect) == 8 and sum(t.weight for t in effect) == pytest.approx(0.0)
    for t in effect:
        assert t.weight == pytest.approx(0.25 if r.arms[t.arm]["llm"] == "upgraded" else -0.25)
    assert stats.arms_of(effect) == set(stats.grid_arms(r))
    est = stats.bootstrap(r, effect, samples=200)
    assert est.point == pytest.approx(10.0, abs=1e-4) and np.allclose(est.per_seed, 10.0, atol=1e-4)


def test_chance_normalisation():
    r = build(seeds=(0,))
    a = index(r, TWIN)
    r.correct["fine_letter"][0, a] = exactly(np.random.default_rng(1), N, 0.2)  # chance
    r.correct["general_letter"][0, a, PART_OF == "knowledge"] = 1  # perfect
    at_chance, perfect = stats.bootstrap_many(
        r,
        [
            stats.term(r.names[a], "fine_letter"),
            stats.term(r.names[a], "general_letter", "knowledge"),
        ],
        samples=100,
    )
    assert at_chance.point == pytest.approx(0.0, abs=1e-4)
    assert perfect.point == pytest.approx(100.0, abs=1e-4) and perfect.interval[0] == pytest.approx(
        100.0
    )


@pytest.mark.parametrize(
    "blind, expected",
    [(CLASSIFY, [R_, R_, R_, NJ]), (NOALIGN, [R_, R_, NJ, R_]), (GRID[0], [R_, R_, R_, R_])],
)
def test_an_image_blind_arm_fails_the_control_and_its_findings_are_not_judged(blind, expected):
    r = build()
    a, where = index(r, blind), PART_OF == "perception"
    for readout in ("letter", "cloze"):  # perception answered the same without the image
        r.correct[f"blank_{readout}"][:, a, where] = r.correct[f"general_{readout}"][:, a, where]
    ctl, found = report.judge(r, FAST)
    name = r.names[a]
    assert not ctl["letter"][name].passed and ctl["letter"][name].effect.point == pytest.approx(0.0)
    assert [c.arm for c in ctl["letter"].values() if not c.passed] == [name]
    assert verdicts(found) == expected
    assert all(name in f.reason for f in found if f.verdict == NJ)
    # a blind grid arm leaves the main effects, with its partner: never averaged in
    assert all(name not in f.arms for f in found[:3]) or blind is not GRID[0]


def test_main_effects_use_only_pairs_of_arms_that_pass_the_control():
    r = build()
    where = PART_OF == "perception"
    frozen = [index(r, levels) for levels in GRID if levels["pretrain"] == "frozen"]
    for a in frozen:  # every LLM-frozen arm image-blind
        for readout in ("letter", "cloze"):
            r.correct[f"blank_{readout}"][:, a, where] = r.correct[f"general_{readout}"][:, a, where]
    keep = {n for n in r.names if r.names.index(n) not in frozen}
    effect = stats.main_effect(r, "encoder", "fine_letter", keep=keep)
    assert len(effect) == 4 and stats.arms_of(effect).isdisjoint(r.names[a] for a in frozen)
    assert stats.main_effect(r, "pretrain", "fine_letter", keep=keep) == ()
    ctl, found = report.judge(r, FAST)
    assert verdicts(found) == [R_, R_, NJ, R_]  # trained vs frozen: no pair left to compare


def test_a_tiny_effect_is_not_reproduced():
    # the LLM trained in pretraining: +1 point (1.25 chance-normalised), against an interval of
    # about +-3 (8 arms of 300 images, 3 seeds)
    r = build(fine=lambda lv, s: fine(lv, s) - 0.07 * up(lv["pretrain"]))
    est = stats.bootstrap(r, stats.main_effect(r, "pretrain", "fine_letter"), samples=1000)
    assert est.point == pytest.approx(1.25, abs=1e-4) and np.all(est.per_seed > 0)
    assert est.interval[0] < 0 < est.interval[1]
    found = report.findings(r, FAST)
    assert verdicts(found) == [R_, R_, NR, R_] and "trained vs frozen" in found[2].reason


def test_a_sign_flip_across_seeds_is_not_reproduced():
    # +15 points on seeds 0 and 1 but -5 on seed 2: a mean of +8.3 (10.4 normalised)
    flip = {0: 0.15, 1: 0.15, 2: -0.05}
    r = build(fine=lambda lv, s: fine(lv, s) + (flip[s] - 0.08) * up(lv["pretrain"]))
    est = stats.bootstrap(r, stats.main_effect(r, "pretrain", "fine_letter"), samples=1000)
    assert est.point == pytest.approx(100 * 0.25 / 3 / 0.8, abs=1e-4)
    assert est.per_seed[2] == pytest.approx(-6.25, abs=1e-4)
    assert not stats.clear(est)
    assert report.findings(r, FAST)[2].verdict == NR


def test_clear_wants_every_seed_to_agree():
    def estimate(interval, per_seed):
        return stats.Estimate(float(np.mean(per_seed)), np.array(per_seed), interval, np.zeros(1))

    assert stats.clear(estimate((1.0, 5.0), [2.0, 3.0, 4.0]))
    assert not stats.clear(estimate((1.0, 5.0), [2.0, 3.0, -4.0]))  # interval alone is not enough
    assert not stats.clear(estimate((-1.0, 5.0), [2.0, 3.0, 4.0]))
    assert stats.clear(estimate((-5.0, -1.0), [-2.0, -3.0]), sign=-1)


def test_unequal_llm_gains_fail_finding_1():
    # fine +25 points (31.25 normalised) against general +8 (12.5): a ratio of 2.5
    r = build(fine=lambda lv, s: fine(lv, s) - 0.05 + 0.17 * up(lv["llm"]))
    found = report.findings(r, FAST)
    assert verdicts(found)[:3] == [NR, R_, R_]
    assert "ratio 2.50 outside [0.5, 2]" in found[0].reason


def test_closing_a_fifth_of_the_gap_fails_finding_4():
    r = build(probe5=0.90)
    rng = np.random.default_rng(2)
    twin, classify = index(r, TWIN), index(r, CLASSIFY)
    for readout in ("letter", "cloze"):
        # the classify arm answers as its twin, plus 14 of the 72 items between the twin's 198
        # and the probe's 270 (letter read-out): a paired gain, clear, closing 19% of the gap
        row = r.correct[f"fine_{readout}"][:, twin].copy()
        for s in range(len(r.seeds)):
            row[s, rng.choice(np.flatnonzero(row[s] == 0), 14, replace=False)] = 1
        r.correct[f"fine_{readout}"][:, classify] = row
    found = report.findings(r, FAST)
    assert verdicts(found) == [R_, R_, R_, NR]
    assert "closes 19% of the gap, less than 50%" in found[3].reason


def test_the_bootstrap_is_deterministic_for_a_seed():
    r = build()
    effect = stats.main_effect(r, "encoder", "fine_letter")
    one, two = (stats.bootstrap(r, effect, samples=300, seed=3) for _ in range(2))
    other = stats.bootstrap(r, effect, samples=300, seed=4)
    assert np.array_equal(one.replicates, two.replicates) and one.interval == two.interval
    assert not np.array_equal(one.replicates, other.replicates)


def test_paired_resampling_with_one_seed():
    # two arms identical but for 15 of 300 items (5%) the second gets right: +6.25 normalised
    r = build(seeds=(0,))
    a, b = index(r, TWIN), index(r, CLASSIFY)
    rows = r.correct["fine_letter"][0]
    rows[b] = rows[a]
    rows[b, np.flatnonzero(rows[a] == 0)[:15]] = 1
    paired = stats.bootstrap(r, stats.difference(r.names[b], r.names[a], "fine_letter"))
    low, high = paired.interval
    assert paired.point == pytest.approx(6.25, abs=1e-4) and 0 < low < 6.25 < high
    # one seed: the width is image noise only, ~ 2 * 1.96 * sqrt(.05 * .95 / 300) / 0.8 = 6.1
    assert 3.0 < high - low < 9.0
    # resampling the two arms' images independently: ~ 2 * 1.96 * sqrt((.66*.34 + .71*.29) / 300)
    # / 0.8 = 18.5 points; pairing removes the noise the arms share
    i, j = np.random.default_rng(5).integers(0, N, size=(2, 2000, N))
    unpaired = 100 * (rows[b][j].mean(1) - rows[a][i].mean(1)) / 0.8
    width = np.subtract(*np.percentile(unpaired, [97.5, 2.5]))
    assert high - low < 0.5 * width
    # one arm's accuracy with one seed: still an interval, around the exact 198 / 300
    (acc,) = stats.bootstrap_many(
        r, [stats.term(r.names[a], "fine_letter")], 500, 0, 0.95, normalise=False
    )
    assert acc.point == pytest.approx(66.0, abs=1e-4)
    assert acc.interval[0] < 66.0 < acc.interval[1] and acc.interval[1] - acc.interval[0] > 5


def test_files_are_written_and_regenerated(tmp_path):
    r = build()
    text, found = report.write_all(tmp_path, r, FAST)
    csv_lines = (tmp_path / "results.csv").read_text().splitlines()
    assert len(csv_lines) == 1 + 3 * 10 and "general_letter_perception" in csv_lines[0]
    md = (tmp_path / "results.md").read_text()
    assert md == text and "(3 seeds, 300 test images)" in md
    for f in found:
        assert f"### {f.number}. {f.claim}\n\n**{f.verdict}**" in md
    assert all(line in md for line in report.rules(report.settings(FAST)))
    assert "| chance | | | | | 20.0 | 20.0 | 36.1 | 36.1 | 50.0 | 25.0 | 33.3 | 50.0 |" in md
    assert (tmp_path / "results.png").stat().st_size > 10_000
    r.save(tmp_path)
    (tmp_path / "results.md").unlink()
    assert report.regenerate(tmp_path, FAST)[0] == text


def test_save_load_round_trip(tmp_path):
    r = build()
    r.save(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results.json", "results.npz"]
    back = Results.load(tmp_path)
    back.validate()
    assert back.seeds == r.seeds and list(back.arms.items()) == list(r.arms.items())
    assert back.info == r.info and back.probe100 == r.probe100
    assert np.array_equal(back.parts, r.parts)
    for group in ("correct", "chance", "probe5"):
        mine, theirs = getattr(r, group), getattr(back, group)
        assert set(mine) == set(theirs) and all(np.array_equal(mine[k], theirs[k]) for k in mine)


def _drop_arm(r):
    del r.arms[find_arm(r, **NOALIGN)]


def _shape(r):
    r.correct["fine_letter"] = r.correct["fine_letter"][:, :, :-1]


def _non_binary(r):
    r.correct["general_cloze"][0, 0, 0] = 0.5


def _part(r):
    r.parts[0] = "vibes"


def _probe(r):
    del r.probe5["base"]


@pytest.mark.parametrize(
    "break_it, message",
    [
        (_drop_arm, "no arm with {'encoder': 'upgraded', 'llm': 'upgraded', 'pretrain': 'none'"),
        (_shape, "correct['fine_letter'] has shape (1, 10, 299), wants (1, 10, 300)"),
        (_non_binary, "correct['general_cloze'] must hold only 0 and 1"),
        (_part, "unknown part(s) ['vibes']"),
        (_probe, "probe5: keys ['upgraded']"),
    ],
)
def test_validate_names_the_problem(break_it, message):
    r = build(seeds=(0,))
    break_it(r)
    with pytest.raises(ValueError) as error:
        r.validate()
    assert message in str(error.value)


def test_unknown_analysis_fields_are_refused():
    with pytest.raises(ValueError, match="bootstrap_sample"):
        report.settings(dict(bootstrap_sample=10))


def test_readme_replaces_only_the_marked_section(tmp_path):
    workdir = tmp_path / "study"
    build().save(workdir)
    (workdir / "study_config.json").write_text(json.dumps({"seeds": 3, "analysis": FAST}))
    path = tmp_path / "README.md"
    before, after = "# Title\n\nIntro.\n\n", "\n\n## Later\n\nMore.\n"
    path.write_text(f"{before}{readme.BEGIN}\nstale numbers\n{readme.END}{after}")
    readme.update(workdir, path)
    text = path.read_text()
    assert text.startswith(before + readme.BEGIN + "\n") and text.endswith(readme.END + after)
    assert "stale numbers" not in text
    for needle in ("Run `study`", "commit `abc1234`", "test machine", "stage0 1.0 min",
                   "wall clock 1.6 min"):  # fmt: skip
        assert needle in text
    assert text.count("**REPRODUCED**") == 4 and "every arm passes" in text
    readme.update(workdir, path)
    assert path.read_text() == text  # the same run gives the same section


def test_readme_without_markers_is_an_error(tmp_path):
    path = tmp_path / "README.md"
    path.write_text("# Title\n\nno markers here\n")
    with pytest.raises(ValueError, match="README.md"):
        readme.replace(path, "numbers")
    assert path.read_text() == "# Title\n\nno markers here\n"
