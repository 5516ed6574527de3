"""The promotion gate: thresholds from params.yaml, and no regression against the promoted model nor, for a
fine-tuned model, against the model it started from (measured in the same evaluation, on the same prompts).

A threshold holds when the one-sided 95% bound over prompts clears it (components/evaluation/bounds.py): the
lower bound of an adherence share, the upper bound of the model's FAD as a share of the untrained model's. Each
check quotes the bound it read (`value`) beside the point estimate. The regression checks compare point
estimates within `regression_tolerance`: the promoted model left only its means behind.

The decision (`decision.json`) is the evaluation stage's output that the pipeline's deploy step
reads; `promote` copies a model that passed, with its metrics, into the promoted folder the next
evaluation compares against.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from model.atomic_io import atomic_directory
from settings.params import EvaluateParams

DECISION_FILE, METRICS_FILE = "decision.json", "metrics.json"
RATIO = "model/untrained"  # intervals.fad.<embedder>'s key for the model's FAD as a share of the untrained model's


@dataclass
class Check:
    name: str
    value: float  # what was compared with the threshold: a threshold's bound, a regression check's estimate
    threshold: float
    passed: bool
    rule: str  # the rule in words, e.g. "model FAD (mel) / untrained FAD <= 0.9, upper 95% bound"
    estimate: float | None = None  # a threshold's point estimate, beside the bound in `value`


@dataclass
class Decision:
    promote: bool
    checks: list[Check] = field(default_factory=list)
    compared_with: str | None = None  # the promoted model's folder, when its metrics were comparable
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


class GateError(ValueError):
    """Metrics or a promoted folder the gate cannot read; the message names which."""


def _bounds(metrics: dict[str, Any], section: str, name: str) -> dict[str, float]:
    try:
        return metrics["intervals"][section][name]
    except KeyError:
        raise GateError(
            f"the gate needs intervals.{section}.{name}, which the metrics lack (evaluated before the gate read "
            "bounds, or with unlabelled prompts): evaluate again"
        ) from None


def _threshold_checks(metrics: dict[str, Any], params: EvaluateParams) -> list[Check]:
    checks = []
    embedder = params.gate_embedder
    if params.max_fad_ratio is not None:
        fad = metrics["fad"][embedder]
        bound = _bounds(metrics, "fad", embedder)[RATIO]["high"]
        checks.append(
            Check(
                f"fad.{embedder}",
                bound,
                params.max_fad_ratio,
                bound <= params.max_fad_ratio,
                f"model FAD ({embedder}) / untrained FAD <= {params.max_fad_ratio:g}, upper 95% bound over prompts",
                estimate=fad["model"] / fad["untrained"],
            )
        )
    for metric, minimum in (
        ("tempo_match", params.min_tempo_match),
        ("key_score", params.min_key_score),
        ("label_accuracy", params.min_label_accuracy),
    ):
        if minimum is not None:
            bounds = _bounds(metrics, "adherence", metric)["model"]
            checks.append(
                Check(
                    metric,
                    bounds["low"],
                    minimum,
                    bounds["low"] >= minimum,
                    f"{metric} >= {minimum:g}, lower 95% bound over prompts",
                    estimate=bounds["mean"],
                )
            )
    return checks


def _regression_checks(
    metrics: dict[str, Any], promoted: dict[str, Any], params: EvaluateParams, whose: str = "promoted model's"
) -> list[Check]:
    """No metric the gate reads may be worse than `promoted`'s (metrics of another model, `whose`) beyond the
    tolerance."""
    tolerance = params.regression_tolerance
    prefix = "regression" if whose == "promoted model's" else "regression_from_start"
    checks = []
    embedder = params.gate_embedder
    if embedder in promoted.get("fad", {}):
        before, now = promoted["fad"][embedder]["model"], metrics["fad"][embedder]["model"]
        limit = before * (1 + tolerance)
        checks.append(
            Check(
                f"{prefix}.fad.{embedder}",
                now,
                limit,
                now <= limit,
                f"FAD ({embedder}) <= {whose} {before:.4g} x (1 + {tolerance:g})",
            )
        )
    for metric in ("tempo_match", "key_score", "label_accuracy"):
        if metric in promoted.get("adherence", {}) and metric in metrics["adherence"]:
            before, now = promoted["adherence"][metric]["model"], metrics["adherence"][metric]["model"]
            limit = before - tolerance
            checks.append(
                Check(
                    f"{prefix}.{metric}",
                    now,
                    limit,
                    now >= limit,
                    f"{metric} >= {whose} {before:.3g} - {tolerance:g}",
                )
            )
    return checks


def _as_model(metrics: dict[str, Any], system: str) -> dict[str, Any] | None:
    """Another system's numbers in `metrics`, laid out as if it were the model (None when it was not measured)."""
    if not any(system in values for values in metrics["fad"].values()):
        return None
    return {
        section: {name: {"model": values[system]} for name, values in metrics[section].items() if system in values}
        for section in ("fad", "adherence")
    }


def read_promoted(folder: str | Path) -> dict[str, Any] | None:
    """The promoted model's metrics, or None when nothing is promoted yet."""
    path = Path(folder) / METRICS_FILE
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise GateError(f"promoted metrics {path} are not JSON: {error}") from None


def decide(metrics: dict[str, Any], params: EvaluateParams, promoted_folder: str | Path | None = None) -> Decision:
    """Promote when every threshold holds and nothing regressed against the promoted model."""
    checks = _threshold_checks(metrics, params)
    notes, compared = [], None
    promoted = read_promoted(promoted_folder) if promoted_folder else None
    if promoted is None:
        notes.append("no promoted model to compare with")
    elif promoted.get("settings") != metrics.get("settings"):
        # Different prompts, durations or embedders give numbers that cannot be compared.
        notes.append(f"the promoted model in {promoted_folder} was evaluated with other settings: not compared")
    else:
        checks += _regression_checks(metrics, promoted, params)
        compared = str(promoted_folder)
    start = _as_model(metrics, "start")
    if start:  # the old test split, before and after fine-tuning: what it knew must not be forgotten
        checks += _regression_checks(metrics, start, params, whose="starting model's")
    return Decision(all(check.passed for check in checks), checks, compared, notes)


def promote(model_dir: str | Path, evaluation_dir: str | Path, promoted: str | Path, force: bool = False) -> Path:
    """Copy the model and its evaluation (metrics, decision, report) into `promoted`, replacing the
    previous promoted model atomically; refused unless the evaluation's decision says promote."""
    evaluation_dir = Path(evaluation_dir)
    decision_path = evaluation_dir / DECISION_FILE
    if not decision_path.is_file():
        raise GateError(f"no {DECISION_FILE} in {evaluation_dir}: run the evaluate stage first")
    decision = json.loads(decision_path.read_text())
    if not decision["promote"] and not force:
        failed = [check["rule"] for check in decision["checks"] if not check["passed"]]
        raise GateError(f"the gate refused this model: {'; '.join(failed)}")
    with atomic_directory(Path(promoted)) as staging:
        shutil.copytree(model_dir, staging / "model")
        for name in (METRICS_FILE, DECISION_FILE, "report.html"):
            if (evaluation_dir / name).is_file():
                shutil.copy2(evaluation_dir / name, staging / name)
    return Path(promoted)
