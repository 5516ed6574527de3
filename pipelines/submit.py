"""Upload and run a compiled pipeline on a Kubeflow Pipelines install, once or on a schedule (`kfp.Client`).

The host is checked first, with a short timeout, so that a wrong URL or no cluster fails in one line
instead of kfp.Client's retries and traceback.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any


class PipelineHostError(RuntimeError):
    """The Kubeflow Pipelines host cannot be reached or refused the request; the message is one line."""


@dataclass(frozen=True)
class Submitted:
    """What the host answered: the run's (or recurring run's) id and where to look at it."""

    id: str
    url: str


def check_host(host: str, timeout_s: float = 5.0) -> None:
    """Raise PipelineHostError unless the KFP API answers at `host`."""
    import requests

    if not host.startswith(("http://", "https://")):
        raise PipelineHostError(f"--host must be an http(s) URL of the Kubeflow Pipelines API, got {host!r}")
    url = host.rstrip("/") + "/apis/v2beta1/healthz"
    try:
        response = requests.get(url, timeout=timeout_s)
    except requests.RequestException as error:
        reason = type(error).__name__.replace("Error", " error").strip().lower()
        raise PipelineHostError(f"Kubeflow Pipelines host {host} is unreachable ({reason})") from None
    if response.status_code >= 400:
        raise PipelineHostError(f"Kubeflow Pipelines host {host} answered {response.status_code} at {url}")


def _client(host: str, namespace: str | None):
    import warnings

    import kfp

    check_host(host)
    with warnings.catch_warnings():  # "only works with Kubeflow Pipelines v2.0.0-beta.2 and later": said in README
        warnings.simplefilter("ignore", FutureWarning)
        return kfp.Client(host=host, namespace=namespace or "kubeflow")


def _experiment_id(client: Any, name: str, namespace: str | None) -> str:
    return client.create_experiment(name=name, namespace=namespace).experiment_id


def submit(
    host: str,
    package: Path,
    arguments: dict[str, Any],
    experiment: str = "musicops",
    run_name: str | None = None,
    namespace: str | None = None,
) -> Submitted:
    """Start one run of the compiled `package` with `arguments` (pipeline parameters)."""
    client = _client(host, namespace)
    result = client.create_run_from_pipeline_package(
        str(package), arguments=arguments, run_name=run_name, experiment_name=experiment, namespace=namespace
    )
    return Submitted(id=result.run_id, url=f"{host.rstrip('/')}/#/runs/details/{result.run_id}")


def cron_expression(cron: str) -> str:
    """KFP's scheduler reads six-field cron (seconds first); a familiar five-field one gets seconds 0."""
    fields = cron.split()
    if len(fields) == 5:
        return "0 " + " ".join(fields)
    if len(fields) == 6:
        return " ".join(fields)
    raise PipelineHostError(f"--cron wants 5 fields (min hour day month weekday) or 6 (seconds first), got {cron!r}")


def schedule(
    host: str,
    package: Path,
    cron: str,
    arguments: dict[str, Any],
    name: str,
    experiment: str = "musicops",
    namespace: str | None = None,
) -> Submitted:
    """A recurring run of `package` on `cron` (one at a time, no catch-up of missed runs)."""
    expression = cron_expression(cron)
    client = _client(host, namespace)
    recurring = client.create_recurring_run(
        experiment_id=_experiment_id(client, experiment, namespace),
        job_name=name,
        cron_expression=expression,
        params=arguments,
        pipeline_package_path=str(package),
        max_concurrency=1,
        no_catchup=True,
    )
    return Submitted(id=recurring.recurring_run_id, url=f"{host.rstrip('/')}/#/recurringruns")
