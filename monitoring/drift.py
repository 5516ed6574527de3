"""Data drift of a window of served traffic against the evaluation's reference, with Evidently 0.7.

`drift_report` runs Evidently's DataDriftPreset (one statistical test per feature, chosen by Evidently: K-S for
numeric samples up to 1000 rows, normed Wasserstein distance above, chi-square or Jensen-Shannon for features
with few distinct values) and DataSummaryPreset (per-feature statistics, side by side) on the numeric features
of `monitoring.schema.DRIFT_FEATURES`. The snapshot renders to a self-contained HTML page and to JSON; both
name every feature, so a reader sees which ones drifted.
"""

from __future__ import annotations

import json
import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import pandas as pd
from evidently import DataDefinition, Dataset, Report
from evidently.core.report import Snapshot
from evidently.legacy.metrics import DataDriftTable
from evidently.presets import DataDriftPreset, DataSummaryPreset

from monitoring.quality import quality_inputs
from monitoring.schema import DRIFT_FEATURES

HTML_FILE = "report.html"
JSON_FILE = "report.json"


def feature_group(name: str) -> str:
    """ "prompt" for what users ask (text statistics, prompt embedding), "audio" for what the model made."""
    return "prompt" if name.startswith("prompt_") else "audio"


@dataclass(frozen=True)
class FeatureDrift:
    """One feature's test: `score` is a p-value (drift when small) or a distance (drift when large), as `method`
    says; Evidently decided `drifted` against `threshold`."""

    method: str
    score: float
    threshold: float
    drifted: bool


@dataclass
class DriftResult:
    """A drift report: the share of compared features that drifted, which ones, each feature's test, the
    window's quality values (when given) and the Evidently snapshot (HTML, JSON, the dashboard's data)."""

    drift_share: float
    drifted: list[str]
    features: dict[str, FeatureDrift]
    skipped: list[str]  # features with no values in the window or the reference: nothing to test
    rows: int
    reference_rows: int
    quality: dict[str, float]
    snapshot: Snapshot

    def group_shares(self) -> dict[str, float]:
        """The drift share within each feature group (see `feature_group`) that was compared. A shift in what
        users ask moves only the prompt features, which the share over all features dilutes."""
        shares = {}
        for group in sorted({feature_group(name) for name in self.features}):
            names = [name for name in self.features if feature_group(name) == group]
            shares[group] = sum(self.features[name].drifted for name in names) / len(names)
        return shares

    def summary(self) -> dict[str, Any]:
        """The verdict in plain JSON types."""
        return {
            "drift_share": self.drift_share,
            "group_shares": self.group_shares(),
            "drifted": self.drifted,
            "rows": self.rows,
            "reference_rows": self.reference_rows,
            "features": {
                name: {"method": f.method, "score": f.score, "threshold": f.threshold, "drifted": f.drifted}
                for name, f in self.features.items()
            },
            "skipped": self.skipped,
            "quality": self.quality,
        }

    def save(self, out_dir: str | Path) -> tuple[Path, Path]:
        """Write `report.html` (Evidently's page) and `report.json` (the summary plus Evidently's metrics, strict
        JSON: NaN becomes null) into `out_dir`; return both paths."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        html, data = out / HTML_FILE, out / JSON_FILE
        html.write_text(self.snapshot.get_html_str(as_iframe=False), encoding="utf-8")
        document = {**self.summary(), "evidently": json.loads(self.snapshot.json())}
        data.write_text(json.dumps(_strict(document), indent=1, allow_nan=False) + "\n", encoding="utf-8")
        return html, data


def _strict(value: Any) -> Any:
    # Evidently's JSON keeps NaN (an empty column's mean, say), which strict JSON readers reject.
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: _strict(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_strict(item) for item in value]
    return value


def _numeric(frame: pd.DataFrame, columns: Sequence[str], who: str) -> pd.DataFrame:
    missing = [name for name in columns if name not in frame.columns]
    if missing:
        raise ValueError(f"the {who} lacks the feature columns {missing} (see monitoring/schema.py)")
    # float64 throughout: nullable integers (Int64 from Parquet) and pd.NA confuse the statistical tests.
    return frame[list(columns)].apply(pd.to_numeric, errors="coerce").astype("float64").reset_index(drop=True)


def drift_report(
    current: pd.DataFrame,
    reference: pd.DataFrame,
    features: Sequence[str] = DRIFT_FEATURES,
    *,
    quality: Mapping[str, float] | None = None,
    when: datetime | None = None,
    drift_share: float = 0.5,
    tags: Sequence[str] = (),
) -> DriftResult:
    """Compare `current` (a window of the request log) with `reference` (the evaluation's) on `features`.

    `quality` (monitoring.quality.window_quality's values) is added to the report as its own metrics, so the
    page and the dashboard show it beside the drift. `when` is the snapshot's time (the dashboard's x axis;
    default now) and `tags` its Evidently tags. `drift_share` only sets where Evidently's page calls the
    dataset drifted; callers decide their own alarm from `DriftResult.drift_share` and `group_shares()`.
    """
    if len(current) == 0 or len(reference) == 0:
        raise ValueError(f"nothing to compare: {len(current)} current rows, {len(reference)} reference rows")
    current_values = _numeric(current, features, "window")
    reference_values = _numeric(reference, features, "reference")
    compared = [
        name for name in features if current_values[name].notna().any() and reference_values[name].notna().any()
    ]
    if not compared:
        raise ValueError("no feature has values in both the window and the reference")
    definition = DataDefinition(numerical_columns=compared)
    metrics: list[Any] = [
        DataDriftPreset(columns=compared, drift_share=drift_share),
        DataSummaryPreset(columns=compared),
    ]
    additional = None
    if quality:
        quality_metrics, additional = quality_inputs(quality)
        metrics += quality_metrics
    with warnings.catch_warnings():
        # Evidently correlates the numeric columns for its page: a constant one (no non-ASCII prompt at all, say)
        # makes numpy warn about 0/0. Chi-square divides by zero for a value the reference never had, and then
        # rightly reports drift. Neither warning tells the user anything the report does not.
        warnings.filterwarnings("ignore", "invalid value encountered in divide", RuntimeWarning)
        warnings.filterwarnings("ignore", "divide by zero encountered in divide", RuntimeWarning)
        snapshot = Report(metrics).run(
            Dataset.from_pandas(current_values[compared], data_definition=definition),
            Dataset.from_pandas(reference_values[compared], data_definition=definition),
            additional_data=additional,
            timestamp=when,
            tags=list(tags),
        )
    # The preset renders its page from Evidently's drift table; asking the run's context for the same table
    # returns that cached result, with Evidently's own per-feature verdicts (the 0.7 ValueDrift metric keeps
    # only the score, and whether a score is a p-value or a distance depends on the test).
    table, _ = snapshot.context.get_legacy_metric(DataDriftTable(columns=compared), None, None)
    tests = {
        name: FeatureDrift(
            method=str(column.stattest_name),
            score=float(column.drift_score),
            threshold=float(column.stattest_threshold),
            drifted=bool(column.drift_detected),
        )
        for name, column in table.drift_by_columns.items()
    }
    features_drift = {name: tests[name] for name in compared}
    drifted = [name for name, test in features_drift.items() if test.drifted]
    return DriftResult(
        drift_share=len(drifted) / len(compared),
        drifted=drifted,
        features=features_drift,
        skipped=[name for name in features if name not in compared],
        rows=len(current),
        reference_rows=len(reference),
        quality={name: float(value) for name, value in (quality or {}).items()},
        snapshot=snapshot,
    )
