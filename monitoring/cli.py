"""`musicops monitor ...`: a drift report of recent traffic, the Evidently dashboard, and the drift check that
starts retraining (exit 1 on drift, so a CronJob or a shell can act on it).

Defaults come from params.yaml's `monitor:` section. The reference is the folder monitoring.reference builds from
the evaluation (`monitor.reference`) and the model (artifacts/model); it is built on first use. Evidently loads
only when a command runs, so `musicops --help` stays fast.
"""

from __future__ import annotations

import functools
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from settings import paths
from settings.params import MonitorParams, ParamsError, load_section

if TYPE_CHECKING:
    import pandas as pd

    from monitoring.quality import FadReference

app = typer.Typer(
    help="Watch served traffic: drift reports, the Evidently dashboard, and the drift check that starts retraining.",
    no_args_is_help=True,
)

ParamsOption = Annotated[Path, typer.Option("--params", help="The params document (its monitor: section).")]
WindowOption = Annotated[
    str | None, typer.Option("--window", "-w", help="Traffic to compare, e.g. 30m, 1h, 2d. Default: monitor.window.")
]
LogOption = Annotated[Path | None, typer.Option("--log-dir", help="The request log. Default: monitor.log_dir.")]
ReferenceOption = Annotated[
    Path | None,
    typer.Option(
        "--reference-dir",
        help="The built reference (reference.parquet, mel statistics). Default: artifacts/monitoring/reference, "
        "built from monitor.reference's evaluation when missing.",
    ),
]
ModelOption = Annotated[
    Path, typer.Option("--model", help="The evaluated model, to embed the reference prompts when building it.")
]


def _fail(message: str) -> typer.Exit:
    typer.secho(f"error: {message}", err=True, fg=typer.colors.RED)
    return typer.Exit(2)


def _settings(path: Path) -> MonitorParams:
    """The params document's monitor: section, checked (settings.params.MonitorParams has every default)."""
    try:
        return load_section(path, "monitor")
    except ParamsError as error:
        raise _fail(f"{error} (run from the repository root, or pass --params)") from None


def _span(text: str) -> timedelta:
    from monitoring.trigger import parse_duration

    try:
        return parse_duration(text)
    except ValueError as error:
        raise _fail(str(error)) from None


def _reference(settings: MonitorParams, reference_dir: Path | None, model: Path) -> tuple[pd.DataFrame, Path]:
    """The reference rows and their folder, building the folder from the evaluation when it is missing."""
    from model.errors import ModelInputError
    from monitoring.reference import build_reference, is_current, read_reference

    folder = reference_dir or paths.MONITOR_REFERENCE
    if not is_current(folder):
        evaluation = Path(settings.reference)
        if not (evaluation / "per_prompt.csv").is_file():
            raise _fail(
                f"no reference in {folder}, and no evaluation in {evaluation} to build it from: "
                "run the evaluate stage first (`dvc repro evaluate`)"
            )
        typer.echo(f"building the reference in {folder} from {evaluation} and {model} (once)", err=True)
        # (also when the folder holds one made for another audio window: it would read every request as drift)
        try:
            build_reference(evaluation, model, folder)
        except ModelInputError as error:
            raise _fail(str(error)) from None
    return read_reference(folder), folder


def _unseen(params: Path) -> list[str] | None:
    """The data sources the promoted model has not seen (settings.data_sources), or None with no promoted model
    (then a retraining is the first training, and any drift may start it)."""
    from model.checkpoint import ModelCard
    from settings.data_sources import source_digests, unseen_sources

    try:
        data = load_section(params, "data")
        promoted = paths.PROMOTED / "model"  # where train.init_from=promoted starts (components/training/start.py)
        if not (promoted / "config.json").is_file():
            return None
        return unseen_sources(source_digests(data.sources), ModelCard.read(promoted).data_sources)
    except (ParamsError, FileNotFoundError) as error:
        raise _fail(f"{error} (data.sources names folders under {paths.DATA_SOURCES}: `musicops data add`)") from None


def _fad(folder: Path) -> FadReference | None:
    from model.errors import ModelInputError
    from monitoring.quality import FadReference

    try:
        return FadReference.load(folder)
    except ModelInputError:
        return None  # the evaluation ran without the mel embedder: no FAD to compare with


@app.command()
def report(
    window: WindowOption = None,
    out: Annotated[
        Path, typer.Option("--out", "-o", help="Folder for report.html and report.json.")
    ] = paths.MONITOR_REPORT,
    params: ParamsOption = paths.PARAMS,
    log_dir: LogOption = None,
    reference_dir: ReferenceOption = None,
    model: ModelOption = paths.MODEL,
) -> None:
    """Compare the last window of served traffic with the reference: an Evidently report (HTML + JSON)."""
    settings = _settings(params)
    span = _span(window or settings.window)
    log = log_dir or Path(settings.log_dir)
    reference, folder = _reference(settings, reference_dir, model)

    from monitoring.drift import drift_report
    from monitoring.quality import window_quality
    from monitoring.trigger import read_window

    now = datetime.now(UTC)
    try:
        current = read_window(log, now - span, now)
    except FileNotFoundError as error:
        raise _fail(str(error)) from None
    if current.empty:
        raise _fail(f"no requests in the last {window or settings.window} in {log}: nothing to compare")
    quality = window_quality(current, _fad(folder))
    result = drift_report(current, reference, quality=quality, drift_share=settings.max_drift_share)
    html, data = result.save(out)
    typer.echo(f"report: {html} ({data})")
    compared = len(result.features)
    drifted = ", ".join(result.drifted) or "none"
    typer.echo(f"{len(current)} requests; drifted features ({len(result.drifted)} of {compared}): {drifted}")


@app.command()
def ui(
    port: Annotated[int, typer.Option(help="Port of the dashboard.")] = 8001,
    host: Annotated[str, typer.Option(help="Interface to listen on (0.0.0.0 in a pod).")] = "127.0.0.1",
    window: WindowOption = None,
    sync: Annotated[bool, typer.Option(help="Add the windows not on the dashboard yet before serving.")] = True,
    params: ParamsOption = paths.PARAMS,
    log_dir: LogOption = None,
    reference_dir: ReferenceOption = None,
    model: ModelOption = paths.MODEL,
) -> None:
    """Serve the Evidently dashboard (drift share, window FAD, adherence and the main features over time)."""
    settings = _settings(params)
    workspace = Path(settings.workspace)
    if sync:
        span = _span(window or settings.window)
        reference, folder = _reference(settings, reference_dir, model)

        from monitoring.dashboard import sync_windows

        log = log_dir or Path(settings.log_dir)
        try:
            added, skipped = sync_windows(workspace, log, reference, span, min_rows=settings.min_rows, fad=_fad(folder))
        except FileNotFoundError as error:
            typer.secho(f"warning: {error}", err=True, fg=typer.colors.YELLOW)
        else:
            note = f"; {skipped} with fewer than {settings.min_rows} requests left out" if skipped else ""
            typer.echo(f"{len(added)} window(s) added to {workspace}{note}")

    from monitoring.dashboard import open_project, serve_ui

    open_project(workspace)  # the project and its panels exist even before any traffic
    try:
        server = serve_ui(workspace, port=port, host=host)
    except RuntimeError as error:
        raise _fail(str(error)) from None
    typer.echo(f"dashboard: {server.url} (Ctrl-C to stop)")
    try:
        server.process.wait()
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()


@app.command()
def check(
    window: WindowOption = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Say what retraining would run; start nothing.")] = False,
    state: Annotated[
        Path | None,
        typer.Option(help="The cool-down state file. Default: trigger_state.json beside the request log."),
    ] = None,
    params: ParamsOption = paths.PARAMS,
    log_dir: LogOption = None,
    reference_dir: ReferenceOption = None,
    model: ModelOption = paths.MODEL,
    dashboard: Annotated[bool, typer.Option(help="Also add the new windows to the dashboard's workspace.")] = True,
) -> None:
    """Check the last window for drift; on drift start retraining (once per cool-down). Exit 1 on drift."""
    settings = _settings(params)
    span = _span(window or settings.window)
    cooldown = _span(settings.cooldown)
    log = log_dir or Path(settings.log_dir)
    reference, folder = _reference(settings, reference_dir, model)

    from monitoring.trigger import check as run_check
    from monitoring.trigger import start_retraining

    state_file = state or log.parent / "trigger_state.json"
    # Digesting the data sources reads every audio byte (gigabytes, every few minutes on a schedule): run_check
    # asks for it only on drift, and the cache lets the launcher reuse that answer instead of digesting again.
    unseen = functools.cache(functools.partial(_unseen, params))

    def launch(kind: str, kfp_host: str | None) -> str:
        fine_tune = bool(unseen())  # new data and a promoted model to start from
        return start_retraining(kind, kfp_host, log_file=state_file.parent / "retrain.log", fine_tune=fine_tune)

    try:
        result = run_check(
            log,
            reference,
            window=span,
            min_rows=settings.min_rows,
            max_drift_share=settings.max_drift_share,
            fad_reference=_fad(folder),
            max_fad_ratio=settings.max_fad_ratio,
            state_file=state_file,
            cooldown=cooldown,
            retrain=settings.retrain,
            kfp_host=settings.kfp_host,
            dry_run=dry_run,
            launcher=launch,
            unseen=unseen,
        )
    except FileNotFoundError as error:
        raise _fail(str(error)) from None
    typer.echo(result.line())
    for line in result.explanation:
        typer.echo(f"  {line}")
    if dashboard:  # the dashboard (`monitor ui`, or the cluster's Evidently UI) serves this workspace
        from monitoring.dashboard import sync_windows

        added, _ = sync_windows(
            Path(settings.workspace), log, reference, span, min_rows=settings.min_rows, fad=_fad(folder)
        )
        typer.echo(f"{len(added)} window(s) added to the dashboard in {settings.workspace}")
    raise typer.Exit(result.exit_code)
