"""The miniature study, end to end: components, the VLM grid, evaluation, the report.

    python -m fgjax.study --workdir=study [--seeds=N]

Every unit (a training or evaluation run) lives in its own workdir and is skipped when finished,
and training runs resume from their last checkpoint: rerunning the command after an
interruption continues where it stopped. Progress: one line per unit with the study's elapsed
time and ETA, plus each training run's own steps/s and ETA.
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path

from fgjax.study import report, stages

TOKENIZER = "tokenizer"


def _xla_flags(flags: str | None) -> None:
    """Study-wide XLA flags, effective only before JAX starts its backend."""
    if flags and flags not in os.environ.get("XLA_FLAGS", ""):
        os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {flags}".strip()


def make_tokenizer(study, path: Path):
    """A byte-level BPE over every text the study's models meet (shared by all seeds)."""
    from fgjax.data import specimens_source
    from fgjax.data.tokenizer import add_image_token, load_tokenizer
    from fgjax.data.tokenizer_train import train_bpe

    if not (path / "tokenizer.json").is_file():
        texts = specimens_source.corpus(int(study.tokenizer.corpus_size))
        tok = train_bpe(texts, int(study.tokenizer.vocab_size), pad_token="<pad>")
        add_image_token(tok)
        tmp = path.with_name(path.name + ".tmp")
        tok.save(str(tmp))
        tmp.rename(path)  # complete or absent, never half-written
    return load_tokenizer(str(path))


class Progress:
    """Study-level progress: done/total weight, elapsed, ETA."""

    def __init__(self, units: list[stages.Unit]):
        self.total = sum(u.weight for u in units)
        self.done = sum(u.weight for u in units if u.done())
        self.start, self.done_at_start = time.monotonic(), self.done

    def report(self, unit: stages.Unit, index: int, count: int) -> None:
        elapsed = time.monotonic() - self.start
        worked = self.done - self.done_at_start
        eta = elapsed / worked * (self.total - self.done) if worked > 0 else float("nan")
        logging.info(
            "[study %d/%d %3.0f%%] %s -- elapsed %s, ETA %s",
            index, count, 100 * self.done / self.total, unit.name, _clock(elapsed), _clock(eta),
        )  # fmt: skip

    def finished(self, unit: stages.Unit) -> None:
        self.done += unit.weight


def _clock(seconds: float) -> str:
    if seconds != seconds:  # nan: not known yet
        return "--:--"
    return f"{int(seconds // 60):02d}:{int(seconds % 60):02d}"


def execute(unit: stages.Unit) -> None:
    if unit.kind == "train":
        from fgjax.train import trainer

        trainer.train(unit.config, str(unit.workdir))
    else:
        from fgjax.evaluate import runner

        runner.evaluate(unit.config, str(unit.workdir))
        (unit.workdir / ".study-done").write_text("ok\n")


def rows_of(units: list[stages.Unit], seed: int) -> tuple[list[dict], list[dict]]:
    """Result rows (one per variant) and probe rows (one per encoder) from the eval runs."""
    rows, probes = [], []
    for unit in units:
        if unit.kind != "eval":
            continue
        summary = json.loads((unit.workdir / "summary.json").read_text())
        fine, general = summary["specimens"], summary["general_qa/specimens"]
        v = unit.variant
        rows.append({
            "seed": seed, "encoder": v.encoder, "llm": v.llm, "pretrain_llm": v.pretrain_llm,
            "fine_mc5": 100 * fine["multiple_choice_likelihood"]["accuracy"],
            "fine_mc5_letters": 100 * fine["multiple_choice_letters"]["accuracy"],
            "fine_rank_top1": 100 * fine["likelihood"]["sum/top1"],
            "fine_rank_top5": 100 * fine["likelihood"]["sum/top5"],
            "general": 100 * general["choice_likelihood"]["accuracy"],
            "general_letters": 100 * general["choice_letters"]["accuracy"],
        })  # fmt: skip
        if "probe_vision_patch_mean" in fine:
            probes.append(
                {
                    "seed": seed,
                    "encoder": v.encoder,
                    "accuracy": 100 * fine["probe_vision_patch_mean"]["accuracy"],
                }
            )
    return rows, probes


def run(config, workdir: str) -> dict:
    """Runs (or resumes) the study; writes results.{csv,md,png}; returns the findings."""
    _xla_flags(config.get("xla_flags"))
    import jax

    from fgjax.train.logging import setup_python_logging

    setup_python_logging()
    workdir = Path(workdir).absolute()
    workdir.mkdir(parents=True, exist_ok=True)
    # the grid's runs share architectures: identical programs compile once, also across reruns
    jax.config.update("jax_compilation_cache_dir", str(workdir / "xla_cache"))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.2)
    (workdir / "study_config.json").write_text(config.to_json_best_effort(indent=2))
    tokenizer_dir = workdir / TOKENIZER
    tok = make_tokenizer(config, tokenizer_dir)
    vocab = -(-tok.vocab_size // 64) * 64
    image_token = tok.token_to_id("<image>")

    plans = {seed: stages.plan(config, seed, workdir / f"seed{seed}", tokenizer_dir, vocab, image_token)
             for seed in range(int(config.seeds))}  # fmt: skip
    units = [u for seed_units in plans.values() for u in seed_units]
    progress = Progress(units)
    for index, unit in enumerate(units, start=1):
        if unit.done():
            continue
        progress.report(unit, index, len(units))
        execute(unit)
        progress.finished(unit)

    rows, probes = [], []
    for seed, seed_units in plans.items():
        r, p = rows_of(seed_units, seed)
        rows += r
        probes += p
    probes = _mean_probes(probes)
    text, found = report.write_all(workdir, rows, probes)
    print(text)
    print(
        f"results: {workdir / 'results.md'}, {workdir / 'results.csv'}, {workdir / 'results.png'}"
    )
    return {f.claim: f.reproduced for f in found}


def _mean_probes(probes: list[dict]) -> list[dict]:
    out = {}
    for p in probes:
        out.setdefault(p["encoder"], []).append(p["accuracy"])
    return [{"encoder": e, "accuracy": sum(v) / len(v)} for e, v in sorted(out.items())]
