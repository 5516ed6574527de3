"""The project's container image and the Kubernetes API: one place that finds a cluster or says in one line why not.

Every pipeline step, training job and predictor runs in `IMAGE`. `custom_objects_api()` reads the pod's service
account when it runs in a cluster (a pipeline step) and the user's kubeconfig otherwise; `reaching(api)` turns a
refused or unresolvable connection into `ClusterUnreachable` naming the host, so callers show one line instead of
urllib3's retry chain. The builders (deploy.py, training_job.py beside it) share the small helpers
below for names and resources, so both check them the way the API server will, and for the pod hardening every
workload of the image gets (non-root, read-only root filesystem, no capabilities, writable /tmp and HOME).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from model.errors import first_line

if TYPE_CHECKING:
    from kubernetes.client import CustomObjectsApi
    from kubernetes.client.exceptions import ApiException

IMAGE = "ghcr.io/musicops/musicops:0.1.0"
NAMESPACE = "musicops"
LABELS = {"app.kubernetes.io/part-of": "musicops"}
# The image's non-root user and its HOME (Dockerfile). HOME holds the caches a read-only root filesystem cannot:
# HF_HOME, NUMBA_CACHE_DIR, MPLCONFIGDIR and XDG_CACHE_HOME all point under it.
USER_ID = 10001
HOME_DIR = "/home/musicops"

# RFC 1123 labels (namespaces); RFC 1035 labels also start with a letter, which KServe and the Kubeflow training
# operators require of the names of their resources.
DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
RESOURCE_NAME = re.compile(r"[a-z]([-a-z0-9]*[a-z0-9])?")
# The API server's resource.Quantity syntax (the CRDs carry the same pattern): "8Gi" is one, "8GB" is not.
QUANTITY = re.compile(r"[+-]?(\d+(\.\d*)?|\.\d+)([KMGTPE]i|[numkMGTPE]|[eE][+-]?(\d+(\.\d*)?|\.\d+))?")
GPU = "nvidia.com/gpu"


class ClusterUnreachable(RuntimeError):
    """No Kubernetes API server can be reached; the one-line message says which host, or that none is configured."""


def name_problem(field: str, value: str, letter_first: bool = True) -> str | None:
    """Why `value` cannot be `field` (a DNS label; a resource name also starts with a letter), or None when it can."""
    if len(value) <= 63 and (RESOURCE_NAME if letter_first else DNS_LABEL).fullmatch(value):
        return None
    start = "a letter" if letter_first else "a letter or digit"
    return (
        f"{field} {value!r} is not a DNS label: lower-case letters, digits and '-', at most 63, starting with {start}"
    )


def quantity_problem(field: str, value: str) -> str | None:
    """Why `value` cannot be `field`, a Kubernetes quantity ("2", "500m", "8Gi"), or None when it can."""
    return None if QUANTITY.fullmatch(str(value)) else f"{field} {value!r} is not a Kubernetes quantity (2, 500m, 8Gi)"


def resources(cpu: str, memory: str, gpus: int = 0) -> dict[str, dict[str, Any]]:
    """Container resources: CPU and memory requested, memory capped, GPUs (only when asked) requested and limited.

    No CPU limit: throttling a busy trainer or predictor protects nothing its request does not already reserve.
    Extended resources such as GPUs must carry a limit equal to the request.
    """
    requests: dict[str, Any] = {"cpu": cpu, "memory": memory}
    limits: dict[str, Any] = {"memory": memory}
    if gpus:
        requests[GPU] = limits[GPU] = gpus
    return {"requests": requests, "limits": limits}


def pod_security_context() -> dict[str, Any]:
    """Every pod of the image: never root, the image's user and group (volumes made group-writable for it), and the
    container runtime's default seccomp profile."""
    return {
        "runAsNonRoot": True,
        "runAsUser": USER_ID,
        "runAsGroup": USER_ID,
        "fsGroup": USER_ID,
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def container_security_context() -> dict[str, Any]:
    """Every container of the image: a read-only root filesystem, no privilege escalation, no capabilities."""
    return {
        "runAsNonRoot": True,
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def scratch_volumes() -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(volumes, mounts): the writable emptyDirs a read-only root filesystem needs, /tmp and HOME (its caches)."""
    volumes = [
        {"name": "tmp", "emptyDir": {"sizeLimit": "2Gi"}},
        {"name": "home", "emptyDir": {"sizeLimit": "1Gi"}},
    ]
    mounts = [{"name": "tmp", "mountPath": "/tmp"}, {"name": "home", "mountPath": HOME_DIR}]
    return volumes, mounts


def _kubeconfig() -> str:
    # Read at call time, not at import as the client's default is, so KUBECONFIG and HOME set later count.
    return os.environ.get("KUBECONFIG") or str(Path.home() / ".kube" / "config")


def custom_objects_api() -> CustomObjectsApi:
    """A CustomObjectsApi on the in-cluster service account, else on the kubeconfig; ClusterUnreachable when neither."""
    from kubernetes import client, config

    configuration = client.Configuration()
    try:
        config.load_incluster_config(client_configuration=configuration)
    except config.ConfigException:
        kubeconfig = _kubeconfig()
        if not any(Path(path).expanduser().is_file() for path in kubeconfig.split(os.pathsep) if path):
            raise ClusterUnreachable(
                "no Kubernetes cluster reachable: no in-cluster service account and no kubeconfig "
                f"(~/.kube/config or KUBECONFIG; looked for {kubeconfig})"
            ) from None
        try:
            config.load_kube_config(config_file=kubeconfig, client_configuration=configuration)
        except (config.ConfigException, OSError, ValueError) as error:
            raise ClusterUnreachable(f"kubeconfig {kubeconfig} cannot be used: {first_line(error)}") from None
    return client.CustomObjectsApi(client.ApiClient(configuration))


def _host(error: Exception, api: Any) -> str:
    pool = getattr(error, "pool", None)  # urllib3's MaxRetryError knows the host it gave up on
    if pool is not None:
        return f"{pool.scheme}://{pool.host}:{pool.port}"
    configuration = getattr(getattr(api, "api_client", None), "configuration", None)
    return getattr(configuration, "host", None) or "the configured API server"


@contextmanager
def reaching(api: Any) -> Iterator[None]:
    """Run Kubernetes API calls; a failed connection becomes ClusterUnreachable naming the host, in one line."""
    import urllib3

    try:
        yield
    except (urllib3.exceptions.HTTPError, OSError) as error:
        reason = first_line(getattr(error, "reason", None) or error)
        # urllib3 prefixes the connection's repr: "HTTPSConnection(host=..., port=...): Failed to establish..."
        reason = reason.split("): ", 1)[-1]
        raise ClusterUnreachable(f"no Kubernetes cluster reachable at {_host(error, api)}: {reason}") from None


def api_error(error: ApiException) -> str:
    """An ApiException in one line: status, reason and the API server's own message (e.g. a webhook's refusal)."""
    message = ""
    try:
        message = json.loads(error.body or "{}").get("message", "")
    except (ValueError, AttributeError):
        message = str(error.body or "")
    text = f"HTTP {error.status} {error.reason or ''}".rstrip()
    lines = str(message).strip().splitlines()
    return f"{text}: {lines[0]}" if lines else text
