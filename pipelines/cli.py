"""`musicops pipeline ...`: compile the Kubeflow pipelines, run one locally with kfp.local, submit or
schedule one on a Kubeflow Pipelines install. kfp loads only when a command runs."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
import yaml

from settings import paths

app = typer.Typer(
    help="The Kubeflow pipeline: compile it, run it here (kfp.local), or submit and schedule it on a cluster.",
    no_args_is_help=True,
)

ParamsOption = Annotated[Path, typer.Option("--params", help="The params document the run starts from.")]
SetOption = Annotated[
    list[str] | None,
    typer.Option("--set", help="Override one parameter, e.g. --set train.steps=50 (repeatable; values read as YAML)."),
]
DistributedOption = Annotated[
    bool, typer.Option("--distributed", help="The pipeline whose train step runs a multi-node TrainJob.")
]
ArgOption = Annotated[
    list[str] | None,
    typer.Option("--arg", help="A pipeline parameter, e.g. --arg preset=small --arg nodes=4 (repeatable)."),
]


def _fail(message: str) -> typer.Exit:
    typer.secho(f"error: {message}", err=True, fg=typer.colors.RED)
    return typer.Exit(2)


def _params(path: Path, settings: list[str] | None) -> dict[str, Any]:
    from pipelines.local_run import parse_settings
    from settings.params import with_overrides

    if not path.is_file():
        raise _fail(f"params file {path} does not exist")
    return with_overrides(yaml.safe_load(path.read_text()) or {}, parse_settings(settings or []))


def _arguments(params_path: Path, settings: list[str] | None, args: list[str] | None) -> dict[str, Any]:
    from pipelines.local_run import parse_settings
    from pipelines.retrain import params_text

    arguments = parse_settings(args or [])
    if settings or params_path != paths.PARAMS:
        arguments["params"] = params_text(_params(params_path, settings))
    return arguments


def _package(distributed: bool) -> Path:
    from pipelines.compile import COMPILED_DIR
    from pipelines.retrain import DISTRIBUTED_NAME, PIPELINE_NAME

    return COMPILED_DIR / f"{DISTRIBUTED_NAME if distributed else PIPELINE_NAME}.yaml"


@app.command("compile")
def compile_command(
    out: Annotated[Path | None, typer.Option(help="Folder for the pipeline YAML. Default: pipelines/compiled.")] = None,
    gpus: Annotated[int, typer.Option(help="GPUs each GPU step requests (0 for a CPU-only cluster).")] = 1,
) -> None:
    """Compile both pipelines to YAML and write the cluster manifests under k8s/ from their builders."""
    from components.cluster.manifests import write_manifests
    from pipelines.compile import COMPILED_DIR, K8S_DIR, compile_all
    from pipelines.retrain import Resources

    for path in compile_all(out or COMPILED_DIR, Resources(gpus=gpus)):
        typer.echo(f"pipeline: {path}")
    for path in write_manifests(K8S_DIR):
        typer.echo(f"manifest: {path}")


@app.command()
def run(
    local: Annotated[bool, typer.Option("--local", help="Run here with kfp.local (required: see `submit`).")] = False,
    params: ParamsOption = paths.PARAMS,
    settings: SetOption = None,
    root: Annotated[Path, typer.Option(help="Local pipeline root: one folder per run.")] = paths.PIPELINE_ROOT,
    cache: Annotated[bool, typer.Option(help="Reuse steps whose inputs did not change.")] = True,
) -> None:
    """Run the whole pipeline on this machine, each step a subprocess; deploy writes its manifest only."""
    from pipelines.local_run import run_local
    from settings.params import ParamsError

    if not local:
        raise _fail("runs here need --local; `musicops pipeline submit --host URL` runs on a cluster")
    try:
        result = run_local(_params(params, settings), root, cache=cache)
    except ParamsError as error:
        raise _fail(str(error)) from None
    except RuntimeError as error:  # kfp.local raises RuntimeError naming the failed task
        raise _fail(str(error).splitlines()[0]) from None
    typer.echo(f"run: {result.folder or 'every step came from the cache (--no-cache runs them again)'}")
    typer.echo(f"report: {result.report}")
    if result.manifest:
        typer.echo(f"gate passed; InferenceService manifest (not applied here): {result.manifest}")
    else:
        typer.echo("gate refused the model: nothing deployed (see the report)")


@app.command()
def submit(
    host: Annotated[str, typer.Option(help="The Kubeflow Pipelines API, e.g. http://localhost:8080.")],
    distributed: DistributedOption = False,
    params: ParamsOption = paths.PARAMS,
    settings: SetOption = None,
    args: ArgOption = None,
    experiment: Annotated[str, typer.Option(help="Experiment to file the run under.")] = "musicops",
    namespace: Annotated[str | None, typer.Option(help="Kubeflow profile namespace (multi-user installs).")] = None,
) -> None:
    """Upload the compiled pipeline and start a run through kfp.Client."""
    from pipelines.submit import PipelineHostError
    from pipelines.submit import submit as submit_run
    from settings.params import ParamsError

    try:
        result = submit_run(
            host, _package(distributed), _arguments(params, settings, args), experiment, namespace=namespace
        )
    except (PipelineHostError, ParamsError) as error:
        raise _fail(str(error)) from None
    typer.echo(f"run {result.id}: {result.url}")


@app.command()
def schedule(
    host: Annotated[str, typer.Option(help="The Kubeflow Pipelines API, e.g. http://localhost:8080.")],
    cron: Annotated[str, typer.Option(help='When to retrain, cron syntax, e.g. "0 3 * * 1" (Mondays 03:00).')],
    name: Annotated[str, typer.Option(help="The recurring run's name.")] = "musicops-retrain-weekly",
    distributed: DistributedOption = False,
    params: ParamsOption = paths.PARAMS,
    settings: SetOption = None,
    args: ArgOption = None,
    experiment: Annotated[str, typer.Option(help="Experiment to file the runs under.")] = "musicops",
    namespace: Annotated[str | None, typer.Option(help="Kubeflow profile namespace (multi-user installs).")] = None,
) -> None:
    """Create a recurring run that retrains on a schedule (one run at a time, no catch-up)."""
    from pipelines.submit import PipelineHostError
    from pipelines.submit import schedule as schedule_run
    from settings.params import ParamsError

    try:
        result = schedule_run(
            host, _package(distributed), cron, _arguments(params, settings, args), name, experiment, namespace
        )
    except (PipelineHostError, ParamsError) as error:
        raise _fail(str(error)) from None
    typer.echo(f"recurring run {result.id}: {result.url}")
