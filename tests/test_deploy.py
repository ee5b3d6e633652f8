"""The Dockerfile and the Kubernetes manifests, checked offline (no Docker engine, no cluster)."""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import ROOT, free_port

from openbayes_serving.settings import Settings

DOCKERFILE = ROOT / "Dockerfile"
KUBERNETES = ROOT / "deploy" / "kubernetes"
# The oldest Kubernetes the manifests claim (HPA autoscaling/v2 and the port sysctl are
# older still), and the newest schema kubernetes-validate bundles.
KUBERNETES_VERSIONS = ("1.27.0", "latest")
SERVER_EXIT_MARGIN = 5  # server.py: the arbiter allows graceful_timeout + 5 s


def dockerfile_instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, with continuation lines joined and comments dropped."""
    instructions: list[tuple[str, str]] = []
    pending = ""
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        keyword, _, rest = (pending + line).partition(" ")
        instructions.append((keyword.upper(), rest.strip()))
        pending = ""
    assert not pending, "the Dockerfile ends inside a continued line"
    return instructions


def last(instructions: list[tuple[str, str]], keyword: str) -> str:
    values = [args for kw, args in instructions if kw == keyword]
    assert values, f"the Dockerfile has no {keyword}"
    return values[-1]


def env_values(instructions: list[tuple[str, str]]) -> dict[str, str]:
    env: dict[str, str] = {}
    for keyword, args in instructions:
        if keyword == "ENV":
            for pair in shlex.split(args):
                name, _, value = pair.partition("=")
                env[name] = value
    return env


def healthcheck_command(instructions: list[tuple[str, str]]) -> list[str]:
    args = last(instructions, "HEALTHCHECK")
    _, _, command = args.partition("CMD ")
    return json.loads(command)


@pytest.fixture(scope="module")
def docker() -> list[tuple[str, str]]:
    return dockerfile_instructions(DOCKERFILE)


def test_dockerfile_starts_from_a_slim_python_image(docker):
    base = [args for kw, args in docker if kw == "FROM"]
    assert len(base) == 1
    assert base[0].startswith("python:")
    assert base[0].endswith("-slim")


def test_dockerfile_runs_as_a_numeric_non_root_user(docker):
    user = last(docker, "USER").split(":")
    assert user[0].isdigit()
    assert int(user[0]) != 0
    assert all(kw != "RUN" for kw, _ in docker[docker.index(("USER", ":".join(user))) :])


def test_dockerfile_serves_production_mode_on_port_80(docker):
    assert last(docker, "EXPOSE") == "80"
    assert env_values(docker)["OPENBAYES_SERVING_PRODUCTION"] == "1"


def test_dockerfile_entrypoint_is_exec_form_so_sigterm_reaches_the_server(docker):
    assert json.loads(last(docker, "ENTRYPOINT")) == ["openbayes-serving", "run", "/app"]
    assert all(kw != "CMD" for kw, _ in docker)  # a shell-form CMD would wrap it in sh -c
    assert last(docker, "STOPSIGNAL") == "SIGTERM"
    assert last(docker, "WORKDIR") == "/app"


def test_dockerfile_healthcheck_probes_healthz_on_port_80_without_curl(docker):
    command = healthcheck_command(docker)
    assert command[:2] == ["python", "-c"]
    assert "urllib.request" in command[2]
    assert "http://127.0.0.1:80/healthz" in command[2]


def test_dockerfile_healthcheck_command_passes_on_a_live_server_and_fails_on_none(docker, serve):
    command = healthcheck_command(docker)
    server = serve("echo_json")
    live = command[2].replace("127.0.0.1:80/", f"127.0.0.1:{server.port}/")
    assert subprocess.run([sys.executable, "-c", live], timeout=30).returncode == 0
    dead = command[2].replace("127.0.0.1:80/", f"127.0.0.1:{free_port()}/")
    result = subprocess.run([sys.executable, "-c", dead], capture_output=True, timeout=30)
    assert result.returncode != 0


def test_dockerignore_keeps_the_virtualenv_and_git_out_but_models_in():
    lines = (ROOT / ".dockerignore").read_text(encoding="utf-8").splitlines()
    ignored = [line.strip() for line in lines if line.strip() and not line.startswith("#")]
    assert ".venv" in ignored
    assert ".git" in ignored
    assert not any("onnx" in pattern for pattern in ignored)


# ---- Kubernetes -----------------------------------------------------------------------


def manifests() -> dict[str, dict[str, Any]]:
    """Every resource in deploy/kubernetes/*.yaml, by kind."""
    resources: dict[str, dict[str, Any]] = {}
    for path in sorted(KUBERNETES.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")):
            if doc:
                assert doc["kind"] not in resources, f"two {doc['kind']}s"
                resources[doc["kind"]] = doc
    return resources


def strategic_merge(base: Any, patch: Any) -> Any:
    """The part of kubectl's strategic merge these patches use: lists of named items merge."""
    if isinstance(base, dict) and isinstance(patch, dict):
        merged = dict(base)
        for key, value in patch.items():
            merged[key] = strategic_merge(base[key], value) if key in base else value
        return merged
    if isinstance(base, list) and isinstance(patch, list) and all("name" in p for p in patch):
        merged_list = list(base)
        for item in patch:
            names = [b.get("name") for b in merged_list]
            if item["name"] in names:
                index = names.index(item["name"])
                merged_list[index] = strategic_merge(merged_list[index], item)
            else:
                merged_list.append(item)
        return merged_list
    return patch


def validate(resource: dict[str, Any]) -> None:
    import kubernetes_validate

    for version in KUBERNETES_VERSIONS:
        if version == "latest":
            version = kubernetes_validate.latest_version()
        kubernetes_validate.validate(resource, version, strict=True)


def container(deployment: dict[str, Any]) -> dict[str, Any]:
    containers = deployment["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    return containers[0]


def test_kubernetes_manifests_are_a_deployment_service_autoscaler_and_budget():
    assert sorted(manifests()) == [
        "Deployment",
        "HorizontalPodAutoscaler",
        "PodDisruptionBudget",
        "Service",
    ]


@pytest.mark.parametrize(
    "kind", ["Deployment", "Service", "HorizontalPodAutoscaler", "PodDisruptionBudget"]
)
def test_kubernetes_manifest_matches_the_kubernetes_schema(kind):
    validate(manifests()[kind])


def test_kubernetes_gpu_patch_gives_a_valid_deployment_with_one_gpu():
    deployment = manifests()["Deployment"]
    patch = yaml.safe_load((KUBERNETES / "patches" / "gpu.yaml").read_text(encoding="utf-8"))
    patched = strategic_merge(deployment, patch)
    validate(patched)
    serving = container(patched)
    assert serving["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert serving["resources"]["requests"] == container(deployment)["resources"]["requests"]
    env = {e["name"]: e["value"] for e in serving["env"]}
    assert env["OPENBAYES_SERVING_DEVICES"] == "cuda:0"
    assert "OPENBAYES_SERVING_GRACEFUL_TIMEOUT" in env  # merged by name, not replaced


def test_kubernetes_probes_use_readyz_for_readiness_and_healthz_for_liveness():
    serving = container(manifests()["Deployment"])
    assert serving["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert serving["livenessProbe"]["httpGet"]["path"] == "/healthz"
    named = {p["name"]: p["containerPort"] for p in serving["ports"]}
    assert named["http"] == 80
    assert serving["readinessProbe"]["httpGet"]["port"] == "http"


def test_kubernetes_grace_period_outlasts_prestop_drain_and_server_margin():
    deployment = manifests()["Deployment"]
    pod = deployment["spec"]["template"]["spec"]
    serving = container(deployment)
    env = {e["name"]: e["value"] for e in serving.get("env", [])}
    drain = float(env.get("OPENBAYES_SERVING_GRACEFUL_TIMEOUT", Settings().graceful_timeout))
    pre_stop = serving["lifecycle"]["preStop"]["exec"]["command"]
    assert pre_stop[0] == "sleep"
    assert pod["terminationGracePeriodSeconds"] > float(pre_stop[1]) + drain + SERVER_EXIT_MARGIN


def test_kubernetes_pod_runs_as_the_images_non_root_user_and_may_bind_port_80(docker):
    pod = manifests()["Deployment"]["spec"]["template"]["spec"]
    security = pod["securityContext"]
    assert security["runAsNonRoot"] is True
    assert str(security["runAsUser"]) == last(docker, "USER").split(":")[0]
    assert {"name": "net.ipv4.ip_unprivileged_port_start", "value": "0"} in security["sysctls"]
    assert (
        container(manifests()["Deployment"])["securityContext"]["allowPrivilegeEscalation"] is False
    )


def test_kubernetes_service_and_autoscaler_point_at_the_deployment():
    resources = manifests()
    deployment, service, hpa = (
        resources["Deployment"],
        resources["Service"],
        resources["HorizontalPodAutoscaler"],
    )
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= labels.items()
    assert service["spec"]["ports"][0]["targetPort"] == "http"
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": deployment["metadata"]["name"],
    }
    assert "replicas" not in deployment["spec"]  # the autoscaler owns the count
    budget = resources["PodDisruptionBudget"]["spec"]
    assert budget["selector"]["matchLabels"].items() <= labels.items()
    assert budget["minAvailable"] < hpa["spec"]["minReplicas"]
