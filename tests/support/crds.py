"""Validate a custom resource against its CRD's openAPIV3Schema, as strictly as the API server does.

The CRDs are vendored from KServe and Kubeflow in k8s/crds (its README names each source and commit), so every
clone validates against them and no test skips for want of them. The schema
is tightened the way a structural schema behaves under the API server's strict field validation: an object with
`properties` rejects fields it does not list, unless the CRD marks it x-kubernetes-preserve-unknown-fields. CEL
rules (x-kubernetes-validations) and formats are not checked.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import yaml

CRD_DIR = Path(__file__).parents[2] / "k8s" / "crds"


def _strict(schema: Any) -> Any:
    if not isinstance(schema, dict):
        return schema
    out = dict(schema)
    if "properties" in schema:
        out["properties"] = {name: _strict(sub) for name, sub in schema["properties"].items()}
        if "additionalProperties" not in schema and not schema.get("x-kubernetes-preserve-unknown-fields"):
            out["additionalProperties"] = False
    for key in ("items", "additionalProperties", "not"):
        if isinstance(schema.get(key), dict):
            out[key] = _strict(schema[key])
    for key in ("anyOf", "allOf", "oneOf"):
        if key in schema:
            out[key] = [_strict(sub) for sub in schema[key]]
    return out


@cache
def _crd(crd_file_name: str) -> dict[str, Any]:
    with open(CRD_DIR / crd_file_name) as f:
        return yaml.load(f, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))


@cache
def _validator(crd_file_name: str, version: str) -> jsonschema.Draft7Validator:
    crd = _crd(crd_file_name)
    versions = {v["name"]: v for v in crd["spec"]["versions"]}
    schema = _strict(versions[version]["schema"]["openAPIV3Schema"])
    return jsonschema.Draft7Validator(schema)


def validate_against_crd(obj: dict[str, Any], crd_file_name: str) -> None:
    """AssertionError listing every violation when `obj` is not a valid resource of the CRD in `crd_file_name`."""
    crd = _crd(crd_file_name)
    group, _, version = obj.get("apiVersion", "").rpartition("/")
    names = [v["name"] for v in crd["spec"]["versions"]]
    assert group == crd["spec"]["group"], f"apiVersion {obj.get('apiVersion')!r} is not in {crd['spec']['group']}"
    assert version in names, f"apiVersion {obj.get('apiVersion')!r}: the CRD serves versions {names}"
    assert obj.get("kind") == crd["spec"]["names"]["kind"], f"kind {obj.get('kind')!r} is not this CRD's"
    errors = sorted(_validator(crd_file_name, version).iter_errors(obj), key=lambda e: list(e.absolute_path))
    assert not errors, f"{obj['kind']} does not validate against {crd_file_name}:\n" + "\n".join(
        f"  {'.'.join(map(str, e.absolute_path)) or '(root)'}: {e.message}" for e in errors
    )
