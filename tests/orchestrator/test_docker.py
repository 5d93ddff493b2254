"""docker/ without a container engine: the compose file and Kubernetes manifests parse, name
images, Dockerfiles, files and commands that exist here, publish ports on 127.0.0.1 only, keep
secrets out, and the Dockerfiles install the project with the same command CI runs."""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import Any

import click
import pytest
import yaml

from orchestrator.cli import main

REPO = Path(__file__).resolve().parents[2]
DOCKER = REPO / "docker"
DOCKERFILES = {"gpu": DOCKER / "Dockerfile", "cpu": DOCKER / "Dockerfile.cpu"}
OUR_IMAGES = {
    "minbert-sweep:gpu": "docker/Dockerfile",
    "minbert-sweep:cpu": "docker/Dockerfile.cpu",
}
# user:password@ inside a URI, or a key=value / key: value that looks like a literal credential.
INLINE_CREDENTIAL = re.compile(r"://[^/\s:@]+:[^/\s@]+@")


def compose() -> dict[str, Any]:
    return yaml.safe_load((DOCKER / "compose.yaml").read_text())


def manifests(name: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all((DOCKER / "k8s" / name).read_text()) if d]


def shell_commands(service: dict[str, Any]) -> list[list[str]]:
    """The commands a service runs, split into words; `sh -c` scripts split at `exec` and `;`."""
    entry = service.get("entrypoint") or []
    command = service.get("command") or []
    if entry[:2] == ["/bin/sh", "-c"]:
        script = " ".join(command)
        # `VAR="$$(...)" exec prog args`: keep what follows `exec`.
        script = script.split(" exec ", 1)[-1].removeprefix("exec ")
        return [shlex.split(script)]
    return [entry + command] if entry else [command]


def orchestrator_args(words: list[str]) -> list[str] | None:
    if "orchestrator" not in words:
        return None
    return words[words.index("orchestrator") + 1 :]


def parse_orchestrator(args: list[str]) -> click.Context:
    """Parse `orchestrator ARGS` with the real CLI (no command runs); fails on unknown options."""
    command = main.commands.get(args[0])
    assert command is not None, f"orchestrator has no command {args[0]!r}"
    return command.make_context(args[0], list(args[1:]))


def parse_ray(args: list[str]) -> click.Context:
    from ray.scripts.scripts import cli as ray_cli

    command = ray_cli.commands.get(args[0])
    assert command is not None, f"ray has no command {args[0]!r}"
    return command.make_context(args[0], list(args[1:]))


def test_compose_services_images_and_dockerfiles_exist() -> None:
    spec = compose()
    services = spec["services"]
    assert set(services) == {"ray-head", "ray-worker", "ray-worker-cpu", "mlflow", "postgres"}
    built = {}
    for name, service in services.items():
        image = service["image"]
        if "build" in service:
            context = (DOCKER / service["build"]["context"]).resolve()
            assert context == REPO, name
            dockerfile = context / service["build"]["dockerfile"]
            assert dockerfile.is_file(), f"{name}: {dockerfile} missing"
            built[image] = service["build"]["dockerfile"]
        else:
            # Images from a registry are pinned to a version, never `latest`.
            assert re.fullmatch(r"[\w./-]+:\d[\w.-]*", image), f"{name}: {image} not pinned"
    assert built == OUR_IMAGES
    for name, service in services.items():
        assert service["image"] in built or "build" not in service, name


def test_compose_runs_real_commands_with_real_options() -> None:
    services = compose()["services"]
    ray_starts = {}
    for name, service in services.items():
        if name == "postgres":
            continue
        for words in shell_commands(service):
            if words[0] == "ray":
                ctx = parse_ray(words[1:])
                ray_starts[name] = ctx.params
            else:
                args = orchestrator_args(words)
                assert args is not None, f"{name}: neither ray nor orchestrator: {words}"
                ctx = parse_orchestrator(args)
                assert args[0] == "tracking-server"
                assert ctx.params["backend_store_uri"].startswith("postgresql://mlflow@postgres:")
                assert "mlflow:5000" in ctx.params["allowed_hosts"].split(",")
    head = ray_starts["ray-head"]
    assert head["head"] and head["block"] and head["port"] == 6379 and head["num_cpus"] == 0
    for worker in ("ray-worker", "ray-worker-cpu"):
        assert ray_starts[worker]["address"] == "ray-head:6379" and ray_starts[worker]["block"]
    # The head's health check is a real `ray status` against the head.
    check = services["ray-head"]["healthcheck"]["test"]
    assert check[0] == "CMD" and parse_ray(check[2:]).params["address"] == "ray-head:6379"
    # GPU workers reserve NVIDIA devices; CPU workers do not.
    devices = services["ray-worker"]["deploy"]["resources"]["reservations"]["devices"]
    assert devices == [{"driver": "nvidia", "count": 1, "capabilities": ["gpu"]}]
    assert "deploy" not in services["ray-worker-cpu"]
    assert services["ray-worker"]["profiles"] == ["gpu"]
    assert services["ray-worker-cpu"]["profiles"] == ["cpu"]


def test_compose_publishes_only_on_loopback_and_keeps_the_rest_internal() -> None:
    spec = compose()
    assert spec["networks"]["cluster"]["internal"] is True
    published = {n: s["ports"] for n, s in spec["services"].items() if s.get("ports")}
    assert published == {"mlflow": ["127.0.0.1:5000:5000"]}
    for name, service in spec["services"].items():
        networks = service["networks"]
        assert "cluster" in networks, name
        internal_only = all(spec["networks"][n].get("internal") for n in networks)
        assert internal_only == (name not in published), name


def test_compose_secrets_come_from_files_that_stay_out_of_git_and_images() -> None:
    spec = compose()
    assert {k: v["file"] for k, v in spec["secrets"].items()} == {
        "ray_auth_token": "./secrets/ray_auth_token",
        "postgres_password": "./secrets/postgres_password",
    }
    assert "secrets/" in (DOCKER / ".gitignore").read_text().split()
    for dockerfile in DOCKERFILES.values():
        ignored = Path(f"{dockerfile}.dockerignore").read_text().split()
        assert {"docker/secrets", ".venv", "results", ".git"} <= set(ignored)
    # Credentials are referenced by file, never written as values.
    for name, service in spec["services"].items():
        for key, value in (service.get("environment") or {}).items():
            if re.search("PASSWORD|TOKEN|SECRET", key):
                assert key.endswith(("_FILE", "_PATH")), f"{name}: {key}"
                assert str(value).startswith("/run/secrets/"), f"{name}: {key}={value}"
    ray_env = spec["services"]["ray-head"]["environment"]
    assert ray_env["RAY_AUTH_TOKEN_PATH"] == "/run/secrets/ray_auth_token"
    assert ray_env["MLFLOW_TRACKING_URI"] == "http://mlflow:5000"


@pytest.mark.parametrize(
    "path",
    sorted(p for p in DOCKER.rglob("*") if p.is_file() and "secrets" not in p.parts),
    ids=lambda p: str(p.relative_to(DOCKER)),
)
def test_no_inline_credentials_in_docker_files(path: Path) -> None:
    text = path.read_text()
    assert not INLINE_CREDENTIAL.search(text), INLINE_CREDENTIAL.search(text)
    assert not re.search(r"(?i)(password|token)\s*[:=]\s*['\"]?[A-Za-z0-9+/]{16,}", text)


def makefile_targets() -> dict[str, tuple[list[str], list[str]]]:
    """{target: (prerequisites, recipe lines)} of the Makefile."""
    targets: dict[str, tuple[list[str], list[str]]] = {}
    current = None
    for line in (REPO / "Makefile").read_text().splitlines():
        match = re.match(r"^([\w.-]+):(?!=)\s*(.*)$", line)
        if match and not line.startswith("\t"):
            current = match.group(1)
            targets[current] = (match.group(2).split(), [])
        elif line.startswith("\t") and current is not None:
            targets[current][1].append(line.strip())
    return targets


def ci_commands() -> list[str]:
    """Every recipe line CI runs: `make T` in .ci/run, expanded through the Makefile."""
    targets = makefile_targets()
    ran: list[str] = []

    def run(target: str) -> None:
        prerequisites, recipe = targets[target]
        for prerequisite in prerequisites:
            if prerequisite in targets:
                run(prerequisite)
        ran.extend(recipe)

    for line in (REPO / ".ci" / "run").read_text().splitlines():
        words = shlex.split(line, comments=True)
        if words[:1] == ["make"]:
            for target in words[1:] or ["install"]:
                run(target)
    return ran


def dockerfile_runs(path: Path) -> list[str]:
    """RUN commands of a Dockerfile with their leading VAR=value assignments removed."""
    text = re.sub(r"\\\n\s*", " ", path.read_text())
    runs = []
    for line in text.splitlines():
        if line.startswith("RUN "):
            words = shlex.split(line[4:])
            while words and re.fullmatch(r"[A-Z_]+=\S*", words[0]):
                words.pop(0)
            runs.append(" ".join(words))
    return runs


@pytest.mark.parametrize("variant", sorted(DOCKERFILES))
def test_dockerfile_installs_with_the_command_ci_runs(variant: str) -> None:
    installs = [c for c in ci_commands() if "install" in c]
    assert installs == ["bash scripts/install.sh"]
    assert (REPO / "scripts" / "install.sh").is_file()
    runs = dockerfile_runs(DOCKERFILES[variant])
    for command in installs:
        assert command in runs, f"{DOCKERFILES[variant].name} does not run `{command}` (CI does)"


@pytest.mark.parametrize("variant", sorted(DOCKERFILES))
def test_dockerfile_base_user_and_entrypoint(variant: str) -> None:
    text = DOCKERFILES[variant].read_text()
    base = re.search(r"^FROM (\S+)", text, re.M).group(1)  # type: ignore[union-attr]
    if variant == "gpu":
        assert re.fullmatch(r"nvidia/cuda:[\d.]+-runtime-ubuntu24\.04", base)
    else:
        assert base == "ubuntu:24.04"  # the same Python as the GPU image: one Ray cluster
    users = re.findall(r"^USER (\S+)", text, re.M)
    assert users and users[-1] not in ("root", "0")
    assert re.search(rf"useradd .*--uid 10001 .*{users[-1]}\b", text)
    assert re.search(r'^ENTRYPOINT \["orchestrator"\]$', text, re.M)
    assert 'orchestrator = "orchestrator.cli:main"' in (REPO / "pyproject.toml").read_text()
    assert "ENV " in text and "RAY_AUTH_MODE=token" in text
    copied = re.findall(r"^COPY (\S+) ", text, re.M)
    assert copied == ["."]


def test_readme_commands_exist() -> None:
    readme = (DOCKER / "README.md").read_text()
    commands = [
        line.strip()
        for block in re.findall(r"```bash\n(.*?)```", readme, re.S)
        for line in block.replace("\\\n", " ").splitlines()
    ]
    parsed = 0
    for line in commands:
        words = shlex.split(line, comments=True)
        args = orchestrator_args(words)
        if args is None:
            continue
        ctx = parse_orchestrator(args)
        parsed += 1
        for value in ctx.params.values():
            if isinstance(value, str) and value.startswith("search_spaces/"):
                assert (REPO / value).is_file(), value
    assert parsed >= 5
    assert "docker compose --profile gpu up -d --build" in commands


def test_kuberay_cluster_matches_the_images_and_ray_version() -> None:
    import ray

    cluster, *claims = manifests("raycluster.yaml")
    assert cluster["apiVersion"] == "ray.io/v1" and cluster["kind"] == "RayCluster"
    spec = cluster["spec"]
    assert spec["rayVersion"] == ray.__version__
    assert spec["authOptions"] == {"mode": "token"}
    head = spec["headGroupSpec"]
    assert head["rayStartParams"]["num-cpus"] == "0"
    pods = [head["template"]["spec"]] + [g["template"]["spec"] for g in spec["workerGroupSpecs"]]
    images = [c["image"].split("/", 1)[1] for pod in pods for c in pod["containers"]]
    assert images == ["minbert-sweep:cpu", "minbert-sweep:gpu"]
    for pod in pods:
        assert pod["securityContext"]["runAsNonRoot"] is True
        mounts = {m["mountPath"]: m for m in pod["containers"][0]["volumeMounts"]}
        assert mounts["/app/results"]["name"] == "results" and mounts["/data"]["readOnly"]
        assert not any("RAY_AUTH_TOKEN" in e["name"] for e in pod["containers"][0]["env"])
    gpu = spec["workerGroupSpecs"][0]["template"]["spec"]["containers"][0]["resources"]
    assert gpu["limits"]["nvidia.com/gpu"] == 1
    results = next(c for c in claims if c["metadata"]["name"] == "minbert-results")
    assert results["spec"]["accessModes"] == ["ReadWriteMany"]


def test_kubernetes_mlflow_server_runs_our_command_without_secrets() -> None:
    docs = {(d["kind"], d["metadata"]["name"]): d for d in manifests("mlflow.yaml")}
    deployment = docs[("Deployment", "mlflow")]
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert container["image"].endswith("/minbert-sweep:cpu")
    ctx = parse_orchestrator(container["args"])
    assert ctx.params["host"] == "0.0.0.0" and ctx.params["port"] == 5000
    assert ctx.params["backend_store_uri"] == "postgresql://mlflow@mlflow-postgres:5432/mlflow"
    env = {e["name"]: e for e in container["env"]}
    assert env["PGPASSWORD"]["valueFrom"]["secretKeyRef"]["name"] == "mlflow-postgres"
    assert docs[("Service", "mlflow")]["spec"]["type"] == "ClusterIP"
    postgres = docs[("StatefulSet", "mlflow-postgres")]["spec"]["template"]["spec"]
    pg_env = {e["name"]: e for e in postgres["containers"][0]["env"]}
    assert "secretKeyRef" in pg_env["POSTGRES_PASSWORD"]["valueFrom"]
