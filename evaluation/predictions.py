"""Read a predictions JSONL, check it against the references, and group it into runs (model, seed).

Line format: dataset.predictions (`id`, `prediction`, optional `model`, `seed`, `sample_idx`, `error`, ...).
A failed generation (`"prediction": null` with an `error`, as `infer` writes it) scores 0 and is counted.
Several samples of one id in one run (distinct sample_idx) are a Best-of-N set. An id unknown to the
references or a repeated (model, seed, id, sample_idx) is an error naming the line; empty predictions
are kept (they score 0) and counted; references without a prediction are counted (or an error with
`require_all`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from dataset.predictions import numbered_rows, top_expert
from dataset.records import Record
from run_config.errors import DataError

MAX_LISTED = 5


@dataclass(frozen=True)
class Prediction:
    """One predicted definition (one sample) for a reference id."""

    id: str
    prediction: str
    model: str
    seed: int | None
    sample_idx: int
    line: int
    failed: bool = False
    expert: int | None = None  # the top expert of a routed MoE's row (`expert`: an id or [[id, weight], ...])


@dataclass
class Run:
    """The predictions of one (model, seed): id -> its samples (file order)."""

    model: str
    seed: int | None
    samples: dict[str, list[Prediction]] = field(default_factory=dict)

    @property
    def ids(self) -> list[str]:
        return list(self.samples)

    def ordered(self) -> list[list[Prediction]]:
        """Each id's samples in sample_idx order."""
        return [sorted(ps, key=lambda p: p.sample_idx) for ps in self.samples.values()]

    def texts(self) -> list[list[str]]:
        return [[p.prediction for p in ps] for ps in self.ordered()]


def read_predictions(path: str | Path, default_model: str | None = None) -> list[Prediction]:
    """Parse every line of a predictions JSONL (dataset.predictions checks each; blank lines skipped)."""
    model_default = default_model or Path(path).stem
    rows, _ = numbered_rows(path)
    out = [
        Prediction(
            id=row["id"],
            prediction="" if row["prediction"] is None else row["prediction"],
            model=row.get("model") or model_default,
            seed=row.get("seed"),
            sample_idx=row["sample_idx"],
            line=line,
            failed=row["prediction"] is None,
            expert=top_expert(row.get("expert")),  # checked by dataset.predictions
        )
        for line, row in rows
    ]
    if not out:
        raise DataError(str(path), None, None, "no predictions")
    return out


def group_runs(
    predictions: list[Prediction],
    references: Mapping[str, Record],
    path: str,
    references_path: str,
    require_all: bool = False,
) -> tuple[list[Run], dict]:
    """Group predictions into runs and check them; return the runs and the counts for the report."""
    unknown = [p for p in predictions if p.id not in references]
    if unknown:
        listed = ", ".join(repr(p.id) for p in unknown[:MAX_LISTED])
        raise DataError(
            path,
            unknown[0].line,
            "id",
            f"{len(unknown)} prediction id(s) not in {references_path} (mismatched ids; first: {listed})",
        )
    runs: dict[tuple[str, int | None], Run] = {}
    seen: dict[tuple, int] = {}
    for p in predictions:
        key = (p.model, p.seed, p.id, p.sample_idx)
        if key in seen:
            raise DataError(
                path,
                p.line,
                "id",
                f"duplicate prediction for id {p.id!r} (model {p.model!r}, "
                f"seed {p.seed}, sample_idx {p.sample_idx}); first on line {seen[key]}",
            )
        seen[key] = p.line
        run = runs.setdefault((p.model, p.seed), Run(p.model, p.seed))
        run.samples.setdefault(p.id, []).append(p)
    counts = {
        "predictions": len(predictions),
        "empty_predictions": sum(not p.prediction.strip() for p in predictions),
        "failed_predictions": sum(p.failed for p in predictions),
        "references": len(references),
        "runs": [],
    }
    for run in runs.values():
        missing = [i for i in references if i not in run.samples]
        if missing and require_all:
            raise DataError(
                references_path,
                None,
                "id",
                f"{len(missing)} reference id(s) have no prediction in "
                f"{path} for model {run.model!r} seed {run.seed} (first: {missing[0]!r})",
            )
        counts["runs"].append(
            {
                "model": run.model,
                "seed": run.seed,
                "ids": len(run.samples),
                "samples": sum(len(v) for v in run.samples.values()),
                "missing_ids": len(missing),
                "missing_examples": missing[:MAX_LISTED],
            }
        )
    return list(runs.values()), counts
