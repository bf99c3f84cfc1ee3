"""infra/ray's KubeRay manifests against the ray.io/v1 RayCluster / RayJob schema (infra/ray/schema/) plus the
checks the schema cannot express (unique worker groups, replica bounds, GPU limits); broken copies are rejected
with an error that names the field. No cluster, no network: jsonschema only."""

from __future__ import annotations

import copy
import functools
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from jsonschema import Draft202012Validator

REPO = Path(__file__).resolve().parents[2]
RAY = REPO / "infra" / "ray"
MANIFESTS = {"raycluster.yaml": "RayCluster", "rayjob.yaml": "RayJob"}
GPU = "nvidia.com/gpu"


@functools.cache
def _schema() -> dict[str, Any]:
    return yaml.safe_load((RAY / "schema" / "kuberay-v1.schema.yaml").read_text())


def _path(parts: Any) -> str:
    out = ""
    for p in parts:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out or "(top level)"


def cluster_spec(doc: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    if doc.get("kind") == "RayJob":
        return "spec.rayClusterSpec", doc.get("spec", {}).get("rayClusterSpec") or {}
    return "spec", doc.get("spec", {})


def validate(doc: Any) -> list[str]:
    """Every problem with one manifest as ``path: message`` lines (empty: valid)."""
    if not isinstance(doc, dict) or doc.get("kind") not in ("RayCluster", "RayJob"):
        return [f"(top level): kind must be RayCluster or RayJob, got {doc.get('kind') if isinstance(doc, dict) else doc!r}"]
    root = _schema()
    validator = Draft202012Validator({"$schema": root["$schema"], "$defs": root["$defs"],
                                      "$ref": f"#/$defs/{doc['kind']}"})
    errors = [f"{_path(e.absolute_path)}: {_message(e, root)}"
              for e in sorted(validator.iter_errors(doc), key=lambda e: list(map(str, e.absolute_path)))]
    if errors:
        return errors
    return semantic_errors(doc)


def _message(error: Any, root: dict[str, Any]) -> str:
    if error.validator == "anyOf" and error.schema == root["$defs"]["quantity"]:
        return f"{error.instance!r} is not a Kubernetes quantity (e.g. 1, \"500m\", \"32Gi\")"
    return error.message


def semantic_errors(doc: dict[str, Any]) -> list[str]:
    """What the CRD schema cannot say: KubeRay's unique-group rule, replica bounds, Kubernetes' extended-resource
    rule (GPU: whole numbers, requests equal to limits), and this project's rules (training off the head,
    at least one GPU worker group, rayVersion = the pinned Ray)."""
    where, spec = cluster_spec(doc)
    errs: list[str] = []
    if not spec:
        return [f"{where}: a cluster spec is required (this project does not select existing clusters)"]
    groups = spec.get("workerGroupSpecs", [])
    names = [g["groupName"] for g in groups]
    for i, g in enumerate(groups):
        p = f"{where}.workerGroupSpecs[{i}]"
        if names.count(g["groupName"]) > 1:
            errs.append(f"{p}.groupName: worker group names must be unique ({g['groupName']!r} repeats)")
        lo, hi = g.get("minReplicas", 0), g.get("maxReplicas", 2**31 - 1)
        if lo > hi:
            errs.append(f"{p}: minReplicas {lo} > maxReplicas {hi}")
        if "replicas" in g and not lo <= g["replicas"] <= hi:
            errs.append(f"{p}.replicas: {g['replicas']} is outside [minReplicas {lo}, maxReplicas {hi}]")
    pods = [(f"{where}.headGroupSpec", spec["headGroupSpec"])] + [
        (f"{where}.workerGroupSpecs[{i}]", g) for i, g in enumerate(groups)]
    for p, group in pods:
        for j, c in enumerate(group["template"]["spec"]["containers"]):
            res = c.get("resources", {})
            lim, req = res.get("limits", {}), res.get("requests", {})
            cp = f"{p}.template.spec.containers[{j}].resources"
            for kind, values in (("limits", lim), ("requests", req)):
                if GPU in values and not re.fullmatch(r"[0-9]+", str(values[GPU])):
                    errs.append(f"{cp}.{kind}.{GPU}: must be a whole number of GPUs, got {values[GPU]!r}")
            if GPU in req and str(req[GPU]) != str(lim.get(GPU)):
                errs.append(f"{cp}.requests.{GPU}: must equal limits.{GPU} (GPUs cannot be overcommitted)")
    if spec["headGroupSpec"]["rayStartParams"].get("num-cpus") != "0":
        errs.append(f"{where}.headGroupSpec.rayStartParams.num-cpus: must be \"0\" (keep training off the head)")
    if not any(_gpus(g) > 0 for g in groups):
        errs.append(f"{where}.workerGroupSpecs: no worker group with a {GPU} limit")
    for i, g in enumerate(groups):
        tolerated = any(t.get("key") == GPU or (t.get("operator") == "Exists" and "key" not in t)
                        for t in g["template"]["spec"].get("tolerations", []))
        if _gpus(g) > 0 and not tolerated:
            errs.append(f"{where}.workerGroupSpecs[{i}].template.spec.tolerations: a GPU group must tolerate the "
                        f"{GPU} taint (GPU nodes are usually tainted {GPU}:NoSchedule)")
    pinned = re.search(r"^ray\[[^\]]*\]==(\S+)", (REPO / "requirements.txt").read_text(), re.MULTILINE)
    if pinned and spec.get("rayVersion") != pinned.group(1):
        errs.append(f"{where}.rayVersion: {spec.get('rayVersion')!r} differs from the pinned ray=={pinned.group(1)}")
    return errs


def _gpus(group: dict[str, Any]) -> float:
    total = 0.0
    for c in group["template"]["spec"]["containers"]:
        try:
            total += float(c.get("resources", {}).get("limits", {}).get(GPU, 0))
        except ValueError:
            pass  # reported as not a whole number
    return total


def _load(name: str) -> dict[str, Any]:
    docs = list(yaml.safe_load_all((RAY / name).read_text()))
    assert len(docs) == 1, f"{name}: one resource per file"
    return docs[0]


def test_schema_is_valid_json_schema() -> None:
    Draft202012Validator.check_schema(_schema())


@pytest.mark.parametrize("name", sorted(MANIFESTS))
def test_manifest_is_valid_with_a_gpu_worker_group(name: str) -> None:
    doc = _load(name)
    assert doc["kind"] == MANIFESTS[name]
    assert validate(doc) == []
    _, spec = cluster_spec(doc)
    assert any(_gpus(g) >= 1 for g in spec["workerGroupSpecs"])


def _break(name: str, edit: Any) -> dict[str, Any]:
    doc = copy.deepcopy(_load(name))
    edit(cluster_spec(doc)[1], doc)
    return doc


def _gpu_container(spec: dict[str, Any]) -> dict[str, Any]:
    return next(g for g in spec["workerGroupSpecs"] if g["groupName"] == "gpu")["template"]["spec"]["containers"][0]


BROKEN = {
    "typo in a container field": (
        lambda s, d: _gpu_container(s).__setitem__("resource", _gpu_container(s).pop("resources")),
        (r"workerGroupSpecs\[0\]\.template\.spec\.containers\[0\]: Additional properties are not allowed "
         r"\('resource' was unexpected\)")),
    "rayStartParams value not a string": (
        lambda s, d: s["headGroupSpec"]["rayStartParams"].__setitem__("num-cpus", 0),
        r"headGroupSpec\.rayStartParams\.num-cpus: 0 is not of type 'string'"),
    "GPU count not a quantity": (
        lambda s, d: _gpu_container(s)["resources"]["limits"].__setitem__(GPU, "one"),
        r"resources\.limits\.nvidia\.com/gpu: 'one' is not a Kubernetes quantity"),
    "worker group without a name": (
        lambda s, d: s["workerGroupSpecs"][0].pop("groupName"),
        r"workerGroupSpecs\[0\]: 'groupName' is a required property"),
    "wrong apiVersion": (
        lambda s, d: d.__setitem__("apiVersion", "ray.io/v1alpha1"),
        r"^apiVersion: 'ray\.io/v1' was expected"),
    "fractional GPU": (
        lambda s, d: _gpu_container(s)["resources"]["limits"].__setitem__(GPU, "0.5"),
        r"limits\.nvidia\.com/gpu: must be a whole number of GPUs"),
    "no GPU worker group": (
        lambda s, d: [c["resources"]["limits"].pop(GPU) for g in s["workerGroupSpecs"]
                      for c in g["template"]["spec"]["containers"] if GPU in c["resources"].get("limits", {})]
        and [c["resources"].get("requests", {}).pop(GPU, None) for g in s["workerGroupSpecs"]
             for c in g["template"]["spec"]["containers"]],
        r"workerGroupSpecs: no worker group with a nvidia\.com/gpu limit"),
    "replicas above maxReplicas": (
        lambda s, d: s["workerGroupSpecs"][0].update(replicas=9, maxReplicas=8),
        r"workerGroupSpecs\[0\]\.replicas: 9 is outside \[minReplicas \d+, maxReplicas 8\]"),
    "GPU group without the GPU toleration": (
        lambda s, d: next(g for g in s["workerGroupSpecs"] if g["groupName"] == "gpu")["template"]["spec"].pop(
            "tolerations"),
        r"workerGroupSpecs\[0\]\.template\.spec\.tolerations: a GPU group must tolerate"),
    "duplicate worker group": (
        lambda s, d: s["workerGroupSpecs"].append(copy.deepcopy(s["workerGroupSpecs"][0])),
        r"groupName: worker group names must be unique \('gpu' repeats\)"),
}


@pytest.mark.parametrize("name", sorted(MANIFESTS))
@pytest.mark.parametrize("case", sorted(BROKEN))
def test_broken_manifest_is_rejected_with_a_readable_error(name: str, case: str) -> None:
    edit, expected = BROKEN[case]
    errors = validate(_break(name, edit))
    assert errors, f"{case}: accepted"
    assert any(re.search(expected, e) for e in errors), f"{case}: expected /{expected}/ in\n" + "\n".join(errors)
    assert all(": " in e and "\n" not in e for e in errors)  # one ``field.path: message`` line each


@pytest.mark.parametrize("name", sorted(MANIFESTS))
def test_no_pod_needs_a_shared_volume_and_every_pod_can_reach_the_store(name: str) -> None:
    """Issue 28: checkpoints and datasets travel through the object store (SSL_TASKS_STORAGE), so no pod mounts a
    shared filesystem (a PersistentVolumeClaim, NFS, a host path), and every pod has the store's S3 keys."""
    doc = yaml.safe_load((RAY / name).read_text())
    _, spec = cluster_spec(doc)
    templates = [spec["headGroupSpec"]["template"]] + [g["template"] for g in spec["workerGroupSpecs"]]
    for t in templates:
        for volume in t["spec"].get("volumes", []):
            assert set(volume) - {"name"} <= {"emptyDir", "secret", "configMap"}, volume
        for c in t["spec"]["containers"]:
            env = {e["name"] for e in c.get("env", [])}
            assert {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"} <= env, (c["name"], env)
