"""Checks that deploy/ stays in step with the project, without docker, kubectl or a network.

Every YAML file under deploy/ is either a Kubernetes manifest (each document checked by its
kind) or one of the known non-Kubernetes files (compose, cluster launcher, Serve config), so a
new file cannot slip in unchecked. Beyond structure, the checks hold the deploy files to what
tunefleet itself relies on: the image tag follows pyproject's version, the Ray tag follows the
installed Ray, entrypoints name real specs, spec sections and CLI subcommands. The last tests
break copies of the real files on purpose, to show that each checker can fail.
"""

from __future__ import annotations

import copy
import fnmatch
import re
import shlex
import sys
from pathlib import Path
from typing import Any, Callable, Iterator
from urllib.parse import urlparse

import pytest
import ray
import yaml

# Ray's own Serve schema still uses pydantic v1-style Field extras; not ours to fix.
pytestmark = pytest.mark.filterwarnings("ignore::pydantic.warnings.PydanticDeprecatedSince20")

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
DOCKERFILE = DEPLOY / "Dockerfile"

# The CLI's subcommands as designed; tunefleet.cli.build_parser() wins once it has them.
PLANNED_SUBCOMMANDS = ("train", "sweep", "serve", "models", "promote", "rollback", "predict", "data")
SPEC_SECTIONS = ("train", "model", "data", "resources", "tracking", "search")
SPEC_FILES = ("demo.yaml", "conll2003.yaml", "sst2.yaml", "ag_news.yaml")
SERVE_IMPORT_PATH = "tunefleet.serve:app_builder"
# NAME, NAME@alias or NAME/version, as `tunefleet serve` takes a model.
MODEL_REF = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*(@[A-Za-z0-9_-]+|/[0-9]+)?")
K8S_NAME = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
KUBERAY_API = "ray.io/v1"
K8S_API = {
    "RayCluster": KUBERAY_API,
    "RayJob": KUBERAY_API,
    "RayService": KUBERAY_API,
    "ConfigMap": "v1",
    "Secret": "v1",
    "Service": "v1",
    "Deployment": "apps/v1",
    "StatefulSet": "apps/v1",
}
GPU_RESOURCE = "nvidia.com/gpu"
# Storage every node of a multi-node cluster can reach; a relative folder is per-node.
SHARED_STORAGE_PREFIXES = ("s3://", "gs://", "gcs://", "/")


# ---------------------------------------------------------------- reading the files


def _yaml_files() -> list[Path]:
    return sorted([*DEPLOY.rglob("*.yaml"), *DEPLOY.rglob("*.yml")])


def _rel(path: Path) -> str:
    return path.relative_to(DEPLOY).as_posix()


def _documents(path: Path) -> list[dict[str, Any]]:
    docs = [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]
    assert docs, f"deploy/{_rel(path)} holds no YAML document"
    for doc in docs:
        assert isinstance(doc, dict), f"deploy/{_rel(path)}: a document is {type(doc).__name__}, not a mapping"
    return docs


def _manifests() -> list[tuple[str, dict[str, Any]]]:
    """(where, document) for every Kubernetes document under deploy/."""
    return [
        (f"deploy/{_rel(path)}[{i}]", doc)
        for path in _yaml_files()
        if _rel(path) not in NON_K8S_FILES
        for i, doc in enumerate(_documents(path))
    ]


def _of_kind(kind: str) -> list[tuple[str, dict[str, Any]]]:
    return [(where, doc) for where, doc in _manifests() if doc.get("kind") == kind]


def _get(doc: Any, dotted: str, where: str) -> Any:
    """doc["a"]["b"][0]... for "a.b.0"; a missing step fails naming the field."""
    node = doc
    for step in dotted.split("."):
        if isinstance(node, list) and step.isdigit() and int(step) < len(node):
            node = node[int(step)]
        elif isinstance(node, dict) and step in node:
            node = node[step]
        else:
            raise AssertionError(f"{where}: missing {dotted} (no {step!r})")
    return node


def _strings(node: Any) -> Iterator[str]:
    """Every string in a parsed YAML tree, plus each list of strings joined (an argv list)."""
    if isinstance(node, str):
        yield node
    elif isinstance(node, dict):
        for value in node.values():
            yield from _strings(value)
    elif isinstance(node, list):
        if node and all(isinstance(item, str) for item in node):
            yield " ".join(node)
        for item in node:
            yield from _strings(item)


def _find_key(node: Any, key: str) -> Iterator[Any]:
    if isinstance(node, dict):
        for k, value in node.items():
            if k == key:
                yield value
            yield from _find_key(value, key)
    elif isinstance(node, list):
        for item in node:
            yield from _find_key(item, key)


def _project_version() -> str:
    # A regex, not tomllib: the project still supports Python 3.10.
    match = re.search(r'^version\s*=\s*"([^"]+)"', (ROOT / "pyproject.toml").read_text(), flags=re.M)
    assert match, "pyproject.toml has no version"
    return match.group(1)


def _major_minor(version: str) -> str:
    return ".".join(version.split(".")[:2])


def _cli_parser():
    """tunefleet.cli.build_parser() where the CLI has one, else None."""
    try:
        from tunefleet import cli
    except ImportError:
        return None
    build = getattr(cli, "build_parser", None)
    return build() if callable(build) else None


def _subcommands(parser) -> set[str]:
    import argparse

    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return set(action.choices)
    return set()


def _known_subcommands() -> tuple[set[str], str]:
    parser = _cli_parser()
    if parser is None:
        return set(PLANNED_SUBCOMMANDS), "the planned CLI"
    return _subcommands(parser), "tunefleet.cli.build_parser()"


def _option_values(argv: list[str], option: str) -> list[str]:
    values = []
    for i, arg in enumerate(argv):
        if arg == option and i + 1 < len(argv):
            values.append(argv[i + 1])
        elif arg.startswith(option + "="):
            values.append(arg[len(option) + 1 :])
    return values


def _spec_section_fields(section: str) -> set[str] | None:
    """Field names of one spec section from tunefleet.spec, or None where it cannot be read."""
    try:
        from tunefleet.spec import Spec
    except ImportError:
        return None
    model = getattr(Spec.model_fields[section].annotation, "model_fields", None)
    return set(model) if model is not None else None


# ---------------------------------------------------------------- shared checkers


def check_overrides(argv: list[str], where: str) -> dict[str, str]:
    """Each --set is KEY=VALUE with KEY a dotted path into a spec section. Returns them."""
    overrides = {}
    for item in _option_values(argv, "--set"):
        key, sep, value = item.partition("=")
        assert sep, f"{where}: --set {item!r} needs KEY=VALUE"
        parts = key.split(".")
        assert len(parts) >= 2 and all(parts), f"{where}: --set key {key!r} is not a dotted path like resources.workers"
        assert parts[0] in SPEC_SECTIONS, (
            f"{where}: --set {key!r} starts with {parts[0]!r}; spec sections are {', '.join(SPEC_SECTIONS)}"
        )
        fields = _spec_section_fields(parts[0])
        if fields is not None:
            assert parts[1] in fields, f"{where}: --set {key!r}: {parts[0]} has no field {parts[1]!r}; it has {sorted(fields)}"
        overrides[key] = value
    return overrides


def check_ray_cluster_spec(spec: dict[str, Any], where: str) -> None:
    """The parts of a KubeRay cluster spec (RayCluster.spec, RayJob.spec.rayClusterSpec,
    RayService.spec.rayClusterConfig) that tunefleet relies on."""
    installed = _major_minor(ray.__version__)
    if "rayVersion" in spec:
        assert _major_minor(str(spec["rayVersion"])) == installed, (
            f"{where}: rayVersion {spec['rayVersion']} but the project runs Ray {ray.__version__}"
        )
    head = _get(spec, "headGroupSpec", where)
    assert isinstance(_get(head, "template.spec.containers.0.image", f"{where}: headGroupSpec"), str)
    # A dashboard on all interfaces is fine only behind a cluster-internal Service.
    if str(head.get("rayStartParams", {}).get("dashboard-host", "127.0.0.1")) != "127.0.0.1":
        assert head.get("serviceType", "ClusterIP") == "ClusterIP", (
            f"{where}: the dashboard listens on all interfaces and headGroupSpec.serviceType is "
            f"{head['serviceType']}; keep it ClusterIP so the dashboard stays inside the cluster"
        )
    groups = _get(spec, "workerGroupSpecs", where)
    assert isinstance(groups, list) and groups, f"{where}: workerGroupSpecs must list at least one group"
    names = []
    for i, group in enumerate(groups):
        at = f"{where}: workerGroupSpecs[{i}]"
        names.append(_get(group, "groupName", at))
        counts = {key: _get(group, key, at) for key in ("replicas", "minReplicas", "maxReplicas")}
        for key, value in counts.items():
            assert isinstance(value, int) and value >= 0, f"{at}.{key} is {value!r}; give a whole number >= 0"
        assert counts["minReplicas"] <= counts["replicas"] <= counts["maxReplicas"], (
            f"{at}: needs minReplicas <= replicas <= maxReplicas, got {counts}"
        )
        assert counts["maxReplicas"] >= 1, f"{at}: maxReplicas is 0, so the group can never run"
        assert isinstance(_get(group, "template.spec.containers.0.image", at), str)
    assert len(names) == len(set(names)), f"{where}: groupName repeats in {names}"


def _gpu_groups(spec: dict[str, Any]) -> list[dict[str, Any]]:
    groups = []
    for group in spec.get("workerGroupSpecs", []):
        container = group["template"]["spec"]["containers"][0]
        limits = container.get("resources", {}).get("limits", {})
        if int(limits.get(GPU_RESOURCE, 0)) >= 1:
            groups.append(group)
    return groups


def check_serve_config(config: dict[str, Any], where: str, host: str) -> None:
    """A Serve config (deploy/serve-config.yaml or a RayService's serveConfigV2) that runs
    tunefleet's app builder, listening on `host`."""
    from ray.serve.schema import ServeDeploySchema

    ServeDeploySchema.model_validate(config)  # Serve's own schema: unknown fields, types
    assert _get(config, "http_options.host", where) == host, (
        f"{where}: http_options.host is {config['http_options']['host']!r}; it must be {host!r} here"
    )
    apps = _get(config, "applications", where)
    assert isinstance(apps, list) and apps, f"{where}: applications must list at least one application"
    for i, app in enumerate(apps):
        at = f"{where}: applications[{i}]"
        assert app.get("import_path") == SERVE_IMPORT_PATH, (
            f"{at}.import_path is {app.get('import_path')!r}; tunefleet's app is {SERVE_IMPORT_PATH}"
        )
        assert app.get("route_prefix") == "/", f"{at}.route_prefix must be '/' (the app serves /predict, /healthz, /model)"
        model = str(_get(app, "args.model", at))
        assert MODEL_REF.fullmatch(model), f"{at}.args.model {model!r} is not NAME, NAME@alias or NAME/version"
        batch = _get(app, "args.max_batch_size", at)
        assert isinstance(batch, int) and batch >= 1, f"{at}.args.max_batch_size is {batch!r}; give an integer >= 1"
        wait = _get(app, "args.batch_wait_timeout_s", at)
        assert isinstance(wait, (int, float)) and wait >= 0, f"{at}.args.batch_wait_timeout_s is {wait!r}; give seconds >= 0"
        deployments = _get(app, "deployments", at)
        assert deployments, f"{at}.deployments is empty"
        for j, deployment in enumerate(deployments):
            scaling = _get(deployment, "autoscaling_config", f"{at}.deployments[{j}]")
            low, high = scaling.get("min_replicas", 1), scaling.get("max_replicas", 1)
            assert 0 <= low <= high, f"{at}.deployments[{j}]: min_replicas {low} > max_replicas {high}"
        # Serve refuses overrides for deployments the app does not define.
        serve_py = ROOT / "platform" / "tunefleet" / "serve.py"
        if serve_py.exists():
            source = serve_py.read_text()
            for deployment in deployments:
                name = deployment["name"]
                assert re.search(rf"\b{re.escape(name)}\b", source), (
                    f"{at}: deployment {name!r} is not named in platform/tunefleet/serve.py"
                )


def _mlflow_server_argv(command: Any, where: str) -> list[str]:
    argv = shlex.split(command) if isinstance(command, str) else [str(arg) for arg in command]
    assert argv[:2] == ["mlflow", "server"], f"{where}: command must start with `mlflow server`, got {argv[:2]}"
    return argv


def check_mlflow_server(argv: list[str], where: str) -> None:
    def one(option: str) -> str:
        values = _option_values(argv, option)
        assert len(values) == 1, f"{where}: `mlflow server` needs one {option}, got {values}"
        return values[0]

    assert one("--backend-store-uri").startswith("postgresql"), f"{where}: --backend-store-uri must be postgresql://..."
    assert one("--artifacts-destination").startswith("s3://"), f"{where}: --artifacts-destination must be s3://..."
    # Inside a container or pod, loopback is unreachable from other containers.
    assert one("--host") == "0.0.0.0", f"{where}: --host must be 0.0.0.0 inside a container"
    assert one("--port") == "5000", f"{where}: --port must be 5000, the port clients are given"


def _allowed_hosts(argv: list[str]) -> list[str] | None:
    values = _option_values(argv, "--allowed-hosts")
    return [host.strip() for host in values[0].split(",")] if values else None


def _host_allowed(patterns: list[str], host: str) -> bool:
    # As mlflow.server.security_utils.is_allowed_host_header matches them.
    return "*" in patterns or any(fnmatch.fnmatch(host, p) if "*" in p else host == p for p in patterns)


# ---------------------------------------------------------------- checkers per kind


def check_raycluster(doc: dict[str, Any], where: str) -> None:
    spec = _get(doc, "spec", where)
    check_ray_cluster_spec(spec, where)
    gpu = _gpu_groups(spec)
    assert gpu, f"{where}: no workerGroupSpecs group sets resources.limits[{GPU_RESOURCE!r}] >= 1"
    assert len(spec["workerGroupSpecs"]) > len(gpu), f"{where}: needs a CPU worker group besides the GPU group(s)"
    for group in gpu:
        image = group["template"]["spec"]["containers"][0]["image"]
        assert image.endswith("-gpu"), f"{where}: GPU group {group['groupName']!r} runs {image}, not a -gpu image"


def check_rayjob(doc: dict[str, Any], where: str) -> None:
    spec = _get(doc, "spec", where)
    argv = shlex.split(_get(spec, "entrypoint", where))
    assert argv[:2] == ["tunefleet", "sweep"], f"{where}: spec.entrypoint must start with `tunefleet sweep`, got {argv[:2]}"
    assert len(argv) > 2 and not argv[2].startswith("-"), f"{where}: spec.entrypoint names no spec file"
    spec_file = Path(argv[2])
    assert spec_file.parent.as_posix() == "search_spaces" and spec_file.name in SPEC_FILES, (
        f"{where}: spec.entrypoint runs {spec_file}; use one of search_spaces/{{{','.join(SPEC_FILES)}}}"
    )
    shipped = list((ROOT / "search_spaces").glob("*.yaml"))
    if shipped:
        assert (ROOT / spec_file).is_file(), f"{where}: spec.entrypoint runs {spec_file}, which is not in search_spaces/"
    overrides = check_overrides(argv, where)
    storage = overrides.get("resources.storage_path", "")
    assert storage.startswith(SHARED_STORAGE_PREFIXES), (
        f"{where}: a multi-node sweep needs --set resources.storage_path=s3://... (or gs://, or an "
        f"absolute NFS path); got {storage or 'nothing'}"
    )
    assert overrides.get("resources.ray_address") == "auto", (
        f"{where}: add --set resources.ray_address=auto so the sweep joins the RayJob's cluster"
    )
    assert spec.get("shutdownAfterJobFinishes") is True, f"{where}: set spec.shutdownAfterJobFinishes: true"
    check_ray_cluster_spec(_get(spec, "rayClusterSpec", where), f"{where}: spec.rayClusterSpec")


def check_rayservice(doc: dict[str, Any], where: str) -> None:
    spec = _get(doc, "spec", where)
    raw = _get(spec, "serveConfigV2", where)
    assert isinstance(raw, str), f"{where}: spec.serveConfigV2 must be a YAML string (use `|`)"
    config = yaml.safe_load(raw)
    assert isinstance(config, dict), f"{where}: spec.serveConfigV2 does not parse to a mapping"
    # In a pod the Service reaches the proxy only on a routable address, unlike `tunefleet serve`'s loopback.
    check_serve_config(config, f"{where}: spec.serveConfigV2", host="0.0.0.0")
    check_ray_cluster_spec(_get(spec, "rayClusterConfig", where), f"{where}: spec.rayClusterConfig")


def check_mlflow_deployment(doc: dict[str, Any], where: str) -> None:
    containers = _get(doc, "spec.template.spec.containers", where)
    for i, container in enumerate(containers):
        command = [*container.get("command", []), *container.get("args", [])]
        if command[:2] != ["mlflow", "server"]:
            continue
        at = f"{where}: containers[{i}]"
        check_mlflow_server(_mlflow_server_argv(command, at), at)
        # Kubernetes leaves a $(VAR) it cannot resolve as literal text: a typo is a silent bad URI.
        available = {env["name"] for env in container.get("env", [])} | _env_from_keys(container)
        for arg in command:
            for var in re.findall(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", arg):
                assert var in available, f"{at}: command uses $({var}), which neither env nor envFrom provides"
        return
    raise AssertionError(f"{where}: no container runs `mlflow server`")


def check_object(doc: dict[str, Any], where: str) -> None:
    """Kinds whose body tunefleet does not depend on: identity only."""


KIND_CHECKS: dict[str, Callable[[dict[str, Any], str], None]] = {
    "RayCluster": check_raycluster,
    "RayJob": check_rayjob,
    "RayService": check_rayservice,
    "Deployment": lambda doc, where: (
        check_mlflow_deployment(doc, where) if doc["metadata"]["name"] == "mlflow" else None
    ),
    "ConfigMap": check_object,
    "Secret": check_object,
    "Service": check_object,
    "StatefulSet": check_object,
}


def check_manifest(doc: dict[str, Any], where: str) -> None:
    kind = doc.get("kind")
    assert kind in KIND_CHECKS, f"{where}: kind {kind!r} is not one deploy/ knows: {', '.join(KIND_CHECKS)}"
    assert doc.get("apiVersion") == K8S_API[kind], f"{where}: {kind} needs apiVersion {K8S_API[kind]}, got {doc.get('apiVersion')!r}"
    name = _get(doc, "metadata.name", where)
    assert isinstance(name, str) and K8S_NAME.fullmatch(name), f"{where}: metadata.name {name!r} is not a valid Kubernetes name"
    KIND_CHECKS[kind](doc, where)


def check_compose(doc: dict[str, Any], where: str) -> None:
    services = _get(doc, "services", where)
    for needed in ("postgres", "minio", "mlflow"):
        assert needed in services, f"{where}: services needs {needed!r}; it has {sorted(services)}"
    argv = _mlflow_server_argv(_get(services["mlflow"], "command", f"{where}: mlflow"), f"{where}: mlflow")
    check_mlflow_server(argv, f"{where}: mlflow")
    bucket = urlparse(_option_values(argv, "--artifacts-destination")[0]).netloc
    # The artifact bucket must exist before MLflow's first upload: some service creates it.
    creators = [
        name for name, service in services.items()
        if any(re.search(rf"\bmc mb\b.*\b{re.escape(bucket)}\b", text) for text in _strings(service))
    ]
    assert creators, f"{where}: no service runs `mc mb ... {bucket}` for --artifacts-destination s3://{bucket}"
    allowed = _allowed_hosts(argv)
    if allowed is not None:
        assert _host_allowed(allowed, "mlflow:5000"), f"{where}: --allowed-hosts {allowed} rejects clients calling mlflow:5000"
    # Published ports stay on loopback; the README says how to open them to a cluster.
    for name, service in services.items():
        for port in service.get("ports", []):
            assert str(port).startswith("127.0.0.1:"), f"{where}: {name} publishes {port!r} beyond loopback"


def check_cluster_launcher(doc: dict[str, Any], where: str) -> None:
    import json

    import jsonschema

    # Ray ships the schema `ray up` validates against.
    schema = json.loads((Path(ray.autoscaler.__file__).parent / "ray-schema.json").read_text())
    jsonschema.validate(doc, schema)
    assert _get(doc, "provider.type", where) == "aws", f"{where}: provider.type must be aws"
    assert _get(doc, "provider.region", where), f"{where}: provider.region is empty"
    types = _get(doc, "available_node_types", where)
    head = _get(doc, "head_node_type", where)
    assert head in types, f"{where}: head_node_type {head!r} is not in available_node_types {sorted(types)}"
    workers = [node for name, node in types.items() if name != head]
    assert any(node.get("resources", {}).get("GPU", 0) >= 1 for node in workers), f"{where}: no worker type offers a GPU"
    assert any(not node.get("resources", {}).get("GPU") for node in workers), f"{where}: no CPU worker type"
    setup = " ".join(_get(doc, "setup_commands", where))
    assert re.search(r"pip install [^;&]*~/tunefleet", setup), f"{where}: setup_commands must pip install the project (~/tunefleet)"
    ray_pin = re.search(r"ray\[[^\]]*\]==([0-9.]+)", setup)
    assert ray_pin and _major_minor(ray_pin.group(1)) == _major_minor(ray.__version__), (
        f"{where}: setup_commands must pin ray==<the project's Ray {ray.__version__}>"
    )
    for target, source in _get(doc, "file_mounts", where).items():
        assert (ROOT / source).exists(), f"{where}: file_mounts {target} copies {source}, which does not exist"
    start = " ".join(_get(doc, "head_start_ray_commands", where))
    assert "--dashboard-host=127.0.0.1" in start, f"{where}: keep the head's dashboard on loopback (--dashboard-host=127.0.0.1)"


def check_local_serve_config(doc: dict[str, Any], where: str) -> None:
    check_serve_config(doc, where, host="127.0.0.1")  # locally, loopback like `tunefleet serve`


NON_K8S_FILES: dict[str, Callable[[dict[str, Any], str], None]] = {
    "mlflow/docker-compose.yaml": check_compose,
    "cluster-launcher.yaml": check_cluster_launcher,
    "serve-config.yaml": check_local_serve_config,
}


# ---------------------------------------------------------------- the tests


def test_deploy_folder_has_the_expected_files():
    present = {_rel(path) for path in DEPLOY.rglob("*") if path.is_file()}
    expected = {
        "README.md", "Dockerfile", "cluster-launcher.yaml", "serve-config.yaml",
        "kuberay/raycluster.yaml", "kuberay/rayjob.yaml", "kuberay/rayservice.yaml",
        "mlflow/docker-compose.yaml", "mlflow/kubernetes.yaml",
    }
    assert expected <= present, f"deploy/ lacks {sorted(expected - present)}"


@pytest.mark.parametrize("path", _yaml_files(), ids=_rel)
def test_yaml_file_is_checked(path):
    rel = _rel(path)
    docs = _documents(path)
    if rel in NON_K8S_FILES:
        assert len(docs) == 1, f"deploy/{rel} should hold one document"
        NON_K8S_FILES[rel](docs[0], f"deploy/{rel}")
    else:
        for i, doc in enumerate(docs):
            check_manifest(doc, f"deploy/{rel}[{i}]")


@pytest.mark.parametrize("kind", ["RayCluster", "RayJob", "RayService"])
def test_each_kuberay_kind_is_shipped(kind):
    assert _of_kind(kind), f"deploy/kuberay/ has no {kind}"


def test_mlflow_kubernetes_manifest_has_server_database_and_secret():
    kinds = {(doc["kind"], doc["metadata"]["name"]) for doc in _documents(DEPLOY / "mlflow" / "kubernetes.yaml")}
    assert ("Deployment", "mlflow") in kinds and ("Service", "mlflow") in kinds, f"mlflow server missing: {kinds}"
    assert any(kind == "Secret" for kind, _ in kinds), f"no Secret for DB/S3 credentials: {kinds}"
    assert any(kind == "StatefulSet" for kind, _ in kinds), f"no database StatefulSet: {kinds}"


def _ray_containers() -> Iterator[tuple[str, dict[str, Any]]]:
    for where, doc in _manifests():
        if doc["apiVersion"] != KUBERAY_API:
            continue
        for group in [*_find_key(doc, "headGroupSpec"), *(g for gs in _find_key(doc, "workerGroupSpecs") for g in gs)]:
            for container in group["template"]["spec"]["containers"]:
                yield f"{where}: {group.get('groupName', 'head')}", container


def _env_from_keys(container: dict[str, Any]) -> set[str]:
    """Keys that envFrom brings in from ConfigMaps/Secrets defined under deploy/."""
    defined = {
        (doc["kind"], doc["metadata"]["name"]): {**doc.get("data", {}), **doc.get("stringData", {})}
        for _, doc in _manifests()
        if doc["kind"] in ("ConfigMap", "Secret")
    }
    keys: set[str] = set()
    for source in container.get("envFrom", []):
        for ref, kind in (("configMapRef", "ConfigMap"), ("secretRef", "Secret")):
            if ref in source:
                keys |= set(defined.get((kind, source[ref]["name"]), {}))
    return keys


def test_env_sources_are_defined_in_deploy():
    defined = {(doc["kind"], doc["metadata"]["name"]) for _, doc in _manifests()}
    for where, doc in _manifests():
        for source in _find_key(doc, "envFrom"):
            for item in source:
                for ref, kind in (("configMapRef", "ConfigMap"), ("secretRef", "Secret")):
                    if ref in item and not item[ref].get("optional"):
                        assert (kind, item[ref]["name"]) in defined, (
                            f"{where}: envFrom {kind} {item[ref]['name']!r} is defined nowhere in deploy/"
                        )


def test_every_ray_pod_knows_the_tracking_server():
    containers = list(_ray_containers())
    assert containers
    for where, container in containers:
        env = {e["name"] for e in container.get("env", [])} | _env_from_keys(container)
        assert "MLFLOW_TRACKING_URI" in env, f"{where}: container {container['name']} gets no MLFLOW_TRACKING_URI"


def test_mlflow_admits_the_host_ray_pods_call():
    uris = {
        doc["data"]["MLFLOW_TRACKING_URI"]
        for _, doc in _of_kind("ConfigMap")
        if "MLFLOW_TRACKING_URI" in doc.get("data", {})
    }
    assert uris, "no ConfigMap under deploy/ sets MLFLOW_TRACKING_URI"
    server = next(doc for _, doc in _of_kind("Deployment") if doc["metadata"]["name"] == "mlflow")
    container = server["spec"]["template"]["spec"]["containers"][0]
    allowed = _allowed_hosts([*container.get("command", []), *container.get("args", [])])
    for uri in uris:
        assert urlparse(uri).port == 5000, f"MLFLOW_TRACKING_URI {uri} is not the server's port 5000"
        if allowed is not None:
            assert _host_allowed(allowed, urlparse(uri).netloc), (
                f"deploy/mlflow/kubernetes.yaml: --allowed-hosts {allowed} rejects {urlparse(uri).netloc} "
                f"(MLFLOW_TRACKING_URI {uri}); MLflow would answer 403"
            )


def _all_images() -> list[tuple[str, str]]:
    images = [
        (f"deploy/{_rel(path)}", image)
        for path in _yaml_files()
        for doc in _documents(path)
        for image in _find_key(doc, "image")
        if isinstance(image, str)
    ]
    images += [("deploy/Dockerfile", image) for image in _dockerfile_from_images()]
    return images


def test_images_are_the_project_image_or_pinned():
    version = _project_version()
    project_image = re.compile(rf"tunefleet:{re.escape(version)}(-gpu)?")
    for where, image in _all_images():
        if image.startswith("tunefleet:"):
            assert project_image.fullmatch(image), f"{where}: {image} must be tunefleet:{version} (pyproject's version)"
            continue
        if "@sha256:" in image:
            continue
        name, _, tag = image.rpartition(":")
        assert name and "/" not in tag, f"{where}: image {image} has no tag; pin a version"
        assert tag != "latest", f"{where}: image {image} uses :latest; pin a version"


def test_ray_tags_follow_the_installed_ray():
    installed = _major_minor(ray.__version__)
    tags = [
        (path, match.group(1))
        for path in DEPLOY.rglob("*")
        if path.is_file()
        for match in re.finditer(r"rayproject/ray:([0-9][0-9.]*)", path.read_text())
    ]
    assert tags, "no rayproject/ray image named under deploy/"
    for path, version in tags:
        assert _major_minor(version) == installed, f"deploy/{_rel(path)} names rayproject/ray:{version}; the project runs Ray {ray.__version__}"


def _dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def _dockerfile_from_images() -> list[str]:
    args: dict[str, str] = {}
    images = []
    for word, rest in _dockerfile_instructions():
        if word == "ARG" and "=" in rest:
            key, _, value = rest.partition("=")
            args.setdefault(key.strip(), value.strip().strip('"'))
        elif word == "FROM":
            image = rest.split()[0]
            images.append(re.sub(r"\$\{?(\w+)\}?", lambda m: args.get(m.group(1), m.group(0)), image))
    return images


def test_dockerfile_builds_on_the_installed_ray():
    images = _dockerfile_from_images()
    assert len(images) == 1, f"deploy/Dockerfile: expected one FROM, got {images}"
    match = re.fullmatch(r"rayproject/ray:([0-9.]+)-py(\d)(\d+)(-gpu)?", images[0])
    assert match, f"deploy/Dockerfile: FROM {images[0]} is not a rayproject/ray:<version>-pyXY image"
    assert _major_minor(match.group(1)) == _major_minor(ray.__version__), (
        f"deploy/Dockerfile: FROM {images[0]} but the project runs Ray {ray.__version__}"
    )


def test_dockerfile_installs_the_project_and_copies_files_that_exist():
    instructions = _dockerfile_instructions()
    runs = " ".join(rest for word, rest in instructions if word == "RUN")
    assert re.search(r"pip install [^&;]*(^|\s)\.(\s|$)", runs), "deploy/Dockerfile never runs `pip install .`"
    copied = []
    for word, rest in instructions:
        if word not in ("COPY", "ADD"):
            continue
        parts = shlex.split(rest)
        if any(part.startswith("--from") for part in parts):
            continue  # from another build stage, not the context
        sources = [part for part in parts if not part.startswith("--")][:-1]
        for source in sources:
            copied.append(source)
            assert (ROOT / source).exists(), f"deploy/Dockerfile copies {source}, which is not in the project root"
    for needed in ("pyproject.toml", "platform/", "search_spaces/"):
        assert needed in copied, f"deploy/Dockerfile does not copy {needed}"


def _command_texts() -> Iterator[tuple[str, str]]:
    """Text that may name a tunefleet command: whole files, but only code in Markdown, where
    prose would mention 'tunefleet' in passing."""
    for path in sorted(DEPLOY.rglob("*")):
        if not path.is_file():
            continue
        text = path.read_text()
        if path.suffix == ".md":
            text = "\n".join(re.findall(r"```.*?```|`[^`\n]+`", text, flags=re.S))
        yield f"deploy/{_rel(path)}", text


def test_tunefleet_commands_named_in_deploy_exist():
    known, source = _known_subcommands()
    named = {
        (where, match.group(1))
        for where, text in _command_texts()
        for match in re.finditer(r"(?<![\w./:-])tunefleet[ \t]+([a-z][a-z_-]*)", text)
    }
    assert named, "deploy/ names no `tunefleet <subcommand>` at all"
    unknown = sorted((where, word) for where, word in named if word not in known | set(PLANNED_SUBCOMMANDS))
    assert not unknown, f"not subcommands of {source} ({sorted(known)}): {unknown}"
    # Planned but not yet in the parser: the CLI stages that add them are still being written.
    pending = sorted({word for _, word in named if word not in known})
    if pending:
        pytest.skip(f"{source} lacks {pending} for now; deploy/ uses them")


def test_rayjob_entrypoint_parses_with_the_cli():
    parser = _cli_parser()
    if parser is None:
        pytest.skip("tunefleet.cli.build_parser() is not there yet")
    for where, doc in _of_kind("RayJob"):
        argv = shlex.split(doc["spec"]["entrypoint"])
        if argv[1] not in _subcommands(parser):
            pytest.skip(f"tunefleet.cli has no `{argv[1]}` yet")
        try:
            parser.parse_args(argv[1:])
        except SystemExit as exc:
            raise AssertionError(f"{where}: `tunefleet` rejects spec.entrypoint {argv[1:]}") from exc


def test_readme_covers_what_an_operator_must_set():
    readme = (DEPLOY / "README.md").read_text()
    for topic in (
        "MLFLOW_TRACKING_URI", "MLFLOW_S3_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "resources.storage_path",
        "--set", "--host 0.0.0.0", "docker build -f deploy/Dockerfile -t tunefleet:",
    ):
        assert topic in readme, f"deploy/README.md never mentions {topic}"
    for path in _yaml_files() + [DOCKERFILE]:
        assert _rel(path) in readme, f"deploy/README.md does not explain deploy/{_rel(path)}"


# ---------------------------------------------------------------- the checkers can fail


def _load(rel: str, kind: str | None = None) -> dict[str, Any]:
    docs = _documents(DEPLOY / rel)
    return copy.deepcopy(next(doc for doc in docs if kind is None or doc.get("kind") == kind))


def _set(doc: dict[str, Any], dotted: str, value: Any) -> dict[str, Any]:
    *parents, last = dotted.split(".")
    node: Any = doc
    for step in parents:
        node = node[int(step)] if isinstance(node, list) else node[step]
    if value is _DELETE:
        del node[int(last) if isinstance(node, list) else last]
    else:
        node[int(last) if isinstance(node, list) else last] = value
    return doc


_DELETE = object()


def _entrypoint(doc: dict[str, Any], old: str, new: str) -> dict[str, Any]:
    assert old in doc["spec"]["entrypoint"]
    doc["spec"]["entrypoint"] = doc["spec"]["entrypoint"].replace(old, new)
    return doc


def _serve_v2(doc: dict[str, Any], dotted: str, value: Any) -> dict[str, Any]:
    config = yaml.safe_load(doc["spec"]["serveConfigV2"])
    doc["spec"]["serveConfigV2"] = yaml.safe_dump(_set(config, dotted, value))
    return doc


BROKEN = {
    "kind typo": lambda: (check_manifest, _set(_load("kuberay/raycluster.yaml"), "kind", "RayClsuter")),
    "old apiVersion": lambda: (check_manifest, _set(_load("kuberay/rayjob.yaml"), "apiVersion", "ray.io/v1alpha1")),
    "no metadata.name": lambda: (check_manifest, _set(_load("kuberay/rayservice.yaml"), "metadata.name", _DELETE)),
    "no head image": lambda: (check_manifest, _set(_load("kuberay/raycluster.yaml"), "spec.headGroupSpec.template.spec.containers.0.image", _DELETE)),
    "no minReplicas": lambda: (check_manifest, _set(_load("kuberay/raycluster.yaml"), "spec.workerGroupSpecs.0.minReplicas", _DELETE)),
    "replicas over max": lambda: (check_manifest, _set(_load("kuberay/raycluster.yaml"), "spec.workerGroupSpecs.0.replicas", 99)),
    "no GPU group": lambda: (check_manifest, _set(_load("kuberay/raycluster.yaml"), "spec.workerGroupSpecs", _load("kuberay/raycluster.yaml")["spec"]["workerGroupSpecs"][:1])),
    "old rayVersion": lambda: (check_manifest, _set(_load("kuberay/raycluster.yaml"), "spec.rayVersion", "2.9.0")),
    "public dashboard": lambda: (check_manifest, _set(_load("kuberay/raycluster.yaml"), "spec.headGroupSpec.serviceType", "LoadBalancer")),
    "train not sweep": lambda: (check_manifest, _entrypoint(_load("kuberay/rayjob.yaml"), "tunefleet sweep", "tunefleet train")),
    "unknown spec": lambda: (check_manifest, _entrypoint(_load("kuberay/rayjob.yaml"), "conll2003.yaml", "conll2033.yaml")),
    "unknown section": lambda: (check_manifest, _entrypoint(_load("kuberay/rayjob.yaml"), "resources.ray_address", "resource.ray_address")),
    "unknown field": lambda: (check_manifest, _entrypoint(_load("kuberay/rayjob.yaml"), "resources.gpus_per_worker", "resources.gpu_per_worker")),
    "local storage": lambda: (check_manifest, _entrypoint(_load("kuberay/rayjob.yaml"), "s3://tunefleet-runs/sweeps", "runs")),
    "wrong import path": lambda: (check_manifest, _serve_v2(_load("kuberay/rayservice.yaml"), "applications.0.import_path", "tunefleet.serve:app")),
    "loopback in a pod": lambda: (check_manifest, _serve_v2(_load("kuberay/rayservice.yaml"), "http_options.host", "127.0.0.1")),
    "bad model ref": lambda: (check_local_serve_config, _set(_load("serve-config.yaml"), "applications.0.args.model", "conll2003-ner@")),
    "no autoscaling": lambda: (check_local_serve_config, _set(_load("serve-config.yaml"), "applications.0.deployments.0.autoscaling_config", _DELETE)),
    "sqlite backend": lambda: (check_compose, _set(_load("mlflow/docker-compose.yaml"), "services.mlflow.command.7", "sqlite:///mlflow.db")),
    "no minio": lambda: (check_compose, _set(_load("mlflow/docker-compose.yaml"), "services.minio", _DELETE)),
    "bucket not created": lambda: (check_compose, _set(_load("mlflow/docker-compose.yaml"), "services.mlflow.command.9", "s3://other")),
    "mlflow host header": lambda: (check_compose, _set(_load("mlflow/docker-compose.yaml"), "services.mlflow.command.11", "localhost")),
    "k8s $(VAR) typo": lambda: (check_manifest, _set(_load("mlflow/kubernetes.yaml", "Deployment"), "spec.template.spec.containers.0.command.7", "postgresql://$(POSTGRES_USR)@db/mlflow")),
    "launcher head type": lambda: (check_cluster_launcher, _set(_load("cluster-launcher.yaml"), "head_node_type", "ray.head")),
    "launcher field typo": lambda: (check_cluster_launcher, _set(_load("cluster-launcher.yaml"), "setup_command", [])),
}


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_checkers_catch_broken_files(case):
    checker, doc = BROKEN[case]()
    with pytest.raises(Exception) as caught:
        checker(doc, f"<broken: {case}>")
    # Anything but a crash in the checker itself: an AssertionError, or a schema's own error.
    assert not isinstance(caught.value, (KeyError, TypeError, AttributeError)), f"checker crashed: {caught.value!r}"


def test_image_rule_rejects_latest_and_off_version_tags(monkeypatch):
    for image in ("postgres:latest", "postgres", "tunefleet:9.9.9"):
        monkeypatch.setattr(sys.modules[__name__], "_all_images", lambda image=image: [("<broken>", image)])
        with pytest.raises(AssertionError):
            test_images_are_the_project_image_or_pinned()
