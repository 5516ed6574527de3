"""Validate a corpus with Great Expectations before anything trains on it.

Two tables go through two suites in an ephemeral GX context: `corpus_clips` (one row per manifest
entry: what each audio file really holds, the caption, the labels; see `components.audio_stats`)
and `corpus_splits` (one row per split: how many distinct sources it has against what `data.splits`
asks for). The output folder gets GX's HTML Data Docs, `summary.json` (each failed check with a few
offending ids) and `audio_stats.csv`, written whole or not at all, also when checks fail, so the
data docs can be opened to see why.

    python -m components.validate --params params.yaml --corpus artifacts/data/corpus --out artifacts/data/validation
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import pandas as pd
import typer

from components.audio_stats import corpus_table
from components.corpus.genres import GENRES
from components.corpus.manifest import SPLITS, Clip, ManifestError, read_manifest, split_counts
from model.atomic_io import atomic_directory
from model.music_features import MODES, key_name
from settings import paths
from settings.params import DataParams, ParamsError, ValidateParams, load_section

if TYPE_CHECKING:
    from great_expectations.core import ExpectationSuiteValidationResult
    from great_expectations.expectations import Expectation

CLIPS_SUITE = "corpus_clips"
SPLITS_SUITE = "corpus_splits"
DOCS_SITE = "corpus_validation"
DOCS_FOLDER = "data_docs"
DURATION_SLACK_S = 0.01  # sample-count rounding (e.g. after resampling) must not fail a clip
TEMPO_RANGE = (40, 240)  # BPM a tempo label may claim
EXAMPLES = 5  # offending ids printed per failed check
KEY_NAMES = sorted({key_name(root, mode) for root in range(12) for mode in MODES})


class CorpusError(ValueError):
    """The corpus folder or its manifest cannot be read; the message names the problem."""


@dataclass(frozen=True)
class FailedCheck:
    """One expectation that failed: which check, on which column, and the rows that broke it."""

    check: str  # what the check demands, in words (the expectation's description)
    expectation: str  # the GX expectation type, e.g. expect_column_values_to_be_between
    column: str
    unit: str  # what a row of its table is: "clip" or "split"
    count: int  # rows that broke it
    examples: list[str]  # the first few of their ids (clip ids or split names)
    error: str | None = None  # set when GX could not evaluate the check at all

    def line(self) -> str:
        """One readable line: `✗ not silent (rms >= 0.003): 2 clips: clip-0003, clip-0017`."""
        if self.error:
            return f"✗ {self.check}: could not be checked: {self.error}"
        rows = f"{self.count} {self.unit}{'' if self.count == 1 else 's'}"
        more = f" and {self.count - len(self.examples)} more" if self.count > len(self.examples) else ""
        return f"✗ {self.check}: {rows}: {', '.join(self.examples)}{more}"


@dataclass(frozen=True)
class ValidationSummary:
    """The outcome of one validation run, as `summary.json` records it."""

    success: bool
    clips: int
    checks: int  # expectations evaluated, over both suites
    failures: list[FailedCheck]
    data_docs: Path  # the Data Docs' index.html

    def to_json(self) -> dict[str, Any]:
        """JSON-ready fields; the data docs path relative to the output folder, so the folder can move."""
        return {
            "success": self.success,
            "clips": self.clips,
            "checks": self.checks,
            "failed": len(self.failures),
            "failures": [asdict(failure) for failure in self.failures],
            "data_docs": f"{DOCS_FOLDER}/index.html",
        }


@dataclass(frozen=True)
class _Table:
    """A dataframe with its suite: `key` names the column whose values identify offending rows."""

    suite: str
    key: str
    unit: str
    frame: pd.DataFrame
    expectations: list[Expectation]


def clip_expectations(data: DataParams, params: ValidateParams) -> list[Expectation]:
    """Checks of each clip: the audio file, the caption, the manifest fields, and the labels when present.

    GX column checks skip nulls, which is what labels need (ingested clips have none) and what the audio
    facts of a missing or undecodable file need (only the exists/decodes checks report that file).
    """
    import great_expectations.expectations as gxe

    low, high = data.min_clip_seconds - DURATION_SLACK_S, data.clip_seconds + DURATION_SLACK_S
    required = [
        gxe.ExpectColumnValuesToNotBeNull(column=name, description=f"every clip has a {name}")
        for name in ("id", "split", "source")
    ]
    return [
        *required,
        gxe.ExpectColumnValuesToBeInSet(column="exists", value_set=[True], description="audio file exists"),
        gxe.ExpectColumnValuesToBeInSet(column="decodes", value_set=[True], description="audio file decodes"),
        gxe.ExpectColumnValuesToBeInSet(
            column="sample_rate", value_set=[data.sample_rate], description=f"sample rate is {data.sample_rate} Hz"
        ),
        gxe.ExpectColumnValuesToBeInSet(column="channels", value_set=[1], description="audio is mono"),
        gxe.ExpectColumnValuesToBeBetween(
            column="duration",
            min_value=low,
            max_value=high,
            description=f"duration {data.min_clip_seconds:g} to {data.clip_seconds:g} s",
        ),
        gxe.ExpectColumnValuesToBeBetween(
            column="rms", min_value=params.rms_floor, description=f"not silent (rms >= {params.rms_floor:g})"
        ),
        gxe.ExpectColumnValuesToBeBetween(
            column="clipped_share",
            max_value=params.max_clipped_share,
            description=f"not clipped (share of samples at full scale <= {params.max_clipped_share:g})",
        ),
        gxe.ExpectColumnValuesToBeInSet(column="has_nan", value_set=[False], description="no NaN samples"),
        gxe.ExpectColumnValuesToMatchRegex(column="caption", regex=r"\S", description="caption is not empty"),
        gxe.ExpectColumnValueLengthsToBeBetween(
            column="caption",
            min_value=params.caption_min_chars,
            max_value=params.caption_max_chars,
            description=f"caption is {params.caption_min_chars} to {params.caption_max_chars} characters",
        ),
        gxe.ExpectColumnValuesToBeUnique(column="id", description="clip ids are unique"),
        gxe.ExpectColumnValuesToBeInSet(
            column="split", value_set=list(SPLITS), description=f"split is one of {', '.join(SPLITS)}"
        ),
        gxe.ExpectColumnValuesToBeInSet(
            column="source_splits", value_set=[1], description="no source appears in two splits"
        ),
        gxe.ExpectColumnValuesToBeInSet(column="genre", value_set=sorted(GENRES), description="genre label is known"),
        gxe.ExpectColumnValuesToBeInSet(column="mode", value_set=list(MODES), description="mode label is major/minor"),
        gxe.ExpectColumnValuesToBeInSet(column="key", value_set=KEY_NAMES, description="key label is a key name"),
        gxe.ExpectColumnValuesToBeBetween(
            column="tempo",
            min_value=TEMPO_RANGE[0],
            max_value=TEMPO_RANGE[1],
            description=f"tempo label is {TEMPO_RANGE[0]} to {TEMPO_RANGE[1]} BPM",
        ),
    ]


def split_table(clips: pd.DataFrame, shares: dict[str, float]) -> pd.DataFrame:
    """One row per split: its distinct sources, and how many `split_counts` gives it for the corpus's sources.

    The main corpus and each data source (the `dataset` column) are split on their own, so the expected counts
    are summed over them: rounding each part differs from rounding the whole."""
    datasets = clips["dataset"].fillna("") if "dataset" in clips else pd.Series("", index=clips.index)
    parts = [split_counts(count, shares) for count in clips.groupby(datasets)["source"].nunique()]
    expected = {split: sum(part[split] for part in parts) for split in SPLITS}
    sources = clips.groupby("split")["source"].nunique()
    return pd.DataFrame(
        {
            "split": list(SPLITS),
            "sources": [int(sources.get(split, 0)) for split in SPLITS],
            "expected": [expected[split] for split in SPLITS],
        }
    )


def split_expectations(splits: pd.DataFrame) -> list[Expectation]:
    """The split sizes `data.splits` asks for, counted in sources (clips of one source never split up)."""
    import great_expectations.expectations as gxe

    wanted = ", ".join(f"{row.split} {row.expected}" for row in splits.itertuples())
    return [
        gxe.ExpectColumnPairValuesToBeEqual(
            column_A="sources", column_B="expected", description=f"distinct sources per split are {wanted}"
        )
    ]


def run_suites(tables: list[_Table], docs_dir: Path) -> list[ExpectationSuiteValidationResult]:
    """Validate each table against its suite in one ephemeral context, then build the Data Docs in `docs_dir`."""
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False)  # tqdm bars would bury the report
    # The ephemeral context comes with a docs site in a fresh temp folder; ours goes into the output, and GX
    # takes only an absolute base_directory when the context has no root directory.
    context.add_data_docs_site(
        DOCS_SITE,
        {
            "class_name": "SiteBuilder",
            "store_backend": {"class_name": "TupleFilesystemStoreBackend", "base_directory": str(docs_dir.resolve())},
            "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
        },
    )
    source = context.data_sources.add_pandas("corpus")
    results = []
    for table in tables:
        batch = source.add_dataframe_asset(table.suite).add_batch_definition_whole_dataframe(table.suite)
        suite = context.suites.add(gx.ExpectationSuite(name=table.suite, expectations=table.expectations))
        validation = context.validation_definitions.add(
            gx.ValidationDefinition(name=table.suite, data=batch, suite=suite)
        )
        result_format = {"result_format": "SUMMARY", "unexpected_index_column_names": [table.key]}
        results.append(validation.run(batch_parameters={"dataframe": table.frame}, result_format=result_format))
    context.build_data_docs(site_names=[DOCS_SITE])
    return results


def failed_checks(table: _Table, result: ExpectationSuiteValidationResult) -> list[FailedCheck]:
    """The failed expectations of one suite's result, each with its first offending ids."""
    failures = []
    for outcome in result.results:
        if outcome.success:
            continue
        config = outcome.expectation_config
        columns = [config.kwargs[name] for name in ("column", "column_A", "column_B") if name in config.kwargs]
        offending = [row[table.key] for row in outcome.result.get("partial_unexpected_index_list") or []]
        failures.append(
            FailedCheck(
                check=config.description or config.type,
                expectation=config.type,
                column=", ".join(columns),
                unit=table.unit,
                count=int(outcome.result.get("unexpected_count") or 0),
                examples=[str(key) for key in offending[:EXAMPLES]],
                error=_exception_message(outcome.exception_info or {}),
            )
        )
    return failures


def _exception_message(info: dict[str, Any]) -> str | None:
    # GX reports an exception either flat or keyed by the metric that raised it.
    for entry in (info, *info.values()):
        if isinstance(entry, dict) and entry.get("raised_exception"):
            return str(entry.get("exception_message"))
    return None


def validate_corpus(corpus_dir: Path, out_dir: Path, data: DataParams, params: ValidateParams) -> ValidationSummary:
    """Measure every clip of the corpus in `corpus_dir`, run both suites, and write the report into `out_dir`.

    `out_dir` receives `data_docs/` (GX's HTML report), `summary.json` and `audio_stats.csv`, replacing
    what was there, whether or not the checks pass. Raises CorpusError when the corpus cannot be read.
    """
    clips = _read_clips(corpus_dir)
    stats = corpus_table(corpus_dir, clips)
    splits = split_table(stats, data.splits)
    tables = [
        _Table(CLIPS_SUITE, "id", "clip", stats, clip_expectations(data, params)),
        _Table(SPLITS_SUITE, "split", "split", splits, split_expectations(splits)),
    ]
    with atomic_directory(out_dir) as staging:
        results = run_suites(tables, staging / DOCS_FOLDER)
        failures = [
            failure for table, result in zip(tables, results, strict=True) for failure in failed_checks(table, result)
        ]
        summary = ValidationSummary(
            success=all(result.success for result in results),
            clips=len(clips),
            checks=sum(len(result.results) for result in results),
            failures=failures,
            data_docs=out_dir / DOCS_FOLDER / "index.html",
        )
        stats.to_csv(staging / "audio_stats.csv", index=False)
        (staging / "summary.json").write_text(json.dumps(summary.to_json(), indent=2) + "\n")
    return summary


def _read_clips(corpus_dir: Path) -> list[Clip]:
    clips = read_manifest(corpus_dir)
    if not clips:
        raise CorpusError(f"the manifest in {corpus_dir} lists no clips")
    return clips


app = typer.Typer(
    help="Validate a corpus (audio files, captions, labels, splits) with Great Expectations.",
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.command()
def main(
    params: Annotated[
        Path, typer.Option(help="params.yaml: reads data (rate, clip length, splits) and validate (thresholds).")
    ] = paths.PARAMS,
    corpus: Annotated[Path, typer.Option(help="Corpus folder: manifest.jsonl and the audio files.")] = paths.CORPUS,
    out: Annotated[
        Path, typer.Option(help="Report folder (replaced): data_docs/, summary.json, audio_stats.csv.")
    ] = paths.VALIDATION,
) -> None:
    """Check every clip and the split sizes; exit 1 listing each failed check (the report is written either way)."""
    try:
        data, thresholds = load_section(params, "data"), load_section(params, "validate")
        summary = validate_corpus(corpus, out, data, thresholds)
    except (ParamsError, ManifestError, CorpusError) as error:
        typer.secho(f"error: {error}", err=True, fg=typer.colors.RED)
        raise typer.Exit(2) from None
    if summary.success:
        typer.echo(f"✓ {summary.clips} clips passed all {summary.checks} checks; data docs: {summary.data_docs}")
        return
    typer.echo(
        f"{len(summary.failures)} of {summary.checks} checks failed on {summary.clips} clips "
        f"(data docs: {summary.data_docs}):"
    )
    for failure in summary.failures:
        typer.echo(f"  {failure.line()}")
    raise typer.Exit(1)


if __name__ == "__main__":
    app()
