"""Offline checks of Loom's deployment files (deploy/ and .dockerignore).

Nothing here builds an image or talks to a cluster: the Dockerfile is parsed
(dockerfile-parse), the Kubernetes manifests are validated against the
Kubernetes JSON schemas (kubernetes-validate) and checked against each other
and against `loom.toml`, the Nomad job is parsed (python-hcl2) and checked,
and the files derived from others (the PrometheusRule, the deployed registry
copies, the NATS users) are compared with their sources. When `kubectl` is
installed, each kustomization is also rendered (`kubectl kustomize`, offline)
and the result validated; the NATS configuration is tested with
`nats-server -t`.

Every check adds one sentence per problem to a `Section`; `run_checks` returns
the sections and `report` prints them. `write_derived` rewrites the derived
files from their sources. The self-tests (test_deploycheck.py) feed broken
copies of the files to these functions.
"""

from __future__ import annotations

import functools
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import textwrap
import tomllib
from pathlib import Path

import hcl2
import kubernetes_validate
import kubernetes_validate.utils
import yaml
from dockerfile_parse import DockerfileParser
from hcl2.utils import SerializationOptions

# The Kubernetes version whose schemas the manifests are validated against.
KUBERNETES_VERSION = "1.34.0"

# kubernetes-validate reads and parses the schema files on every call; they
# do not change, so read each once.
kubernetes_validate.utils.schema_contents = functools.lru_cache(maxsize=None)(kubernetes_validate.utils.schema_contents)

# libyaml's loader where PyYAML has it: several times faster.
YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def load_yaml(text: str):
    return yaml.load(text, Loader=YAML_LOADER)


# This repository: where scripts/install-nats-server puts nats-server.
HOME_REPO = Path(__file__).resolve().parents[2]

DOCKERFILE = "deploy/Dockerfile"
DOCKERIGNORE = ".dockerignore"
KUBERNETES_DIR = "deploy/kubernetes"
BASE_DIR = "deploy/kubernetes/base"
HPA_DIR = "deploy/kubernetes/hpa"
K8S_LOOM_TOML = "deploy/kubernetes/base/config/loom.toml"
K8S_REGISTRY = "deploy/kubernetes/base/config/workers.toml"
K8S_NATS_DIR = "deploy/kubernetes/base/nats"
K8S_NATS_AUTH = "deploy/kubernetes/base/nats/auth.conf"
K8S_SECRETS = "deploy/kubernetes/secrets.example.yaml"
PROMETHEUS_RULE = "deploy/kubernetes/base/prometheusrule.yaml"
NOMAD_JOB = "deploy/nomad/loom.nomad.hcl"
NOMAD_REGISTRY = "deploy/nomad/workers.toml"
RULES = "deploy/prometheus/loom-rules.yml"
NATS_AUTH = "deploy/nats/auth.conf"
EXAMPLE_REGISTRY = "examples/value-first/workers.toml"

# Where deploy/Dockerfile puts the example registry in the image.
IMAGE_EXAMPLE_DIR = "/opt/loom/examples/value-first"

# The long-running roles: Kubernetes Deployment, Nomad group, role name.
ROLES = {
    "scheduler": ("loom-scheduler", "scheduler"),
    "validator": ("loom-validator", "validator"),
    "klaxon": ("loom-klaxon", "klaxon"),
    "agent": ("loom-agent", "agents"),
}
# Replicas (Kubernetes) and count (Nomad) each role must have; None: any.
REPLICAS = {"scheduler": 2, "validator": 2, "klaxon": None, "agent": None}

# After agent.drain_timeout an agent stops the runs still going and hands
# them back, waiting up to 30 s for that (agent/src/lib.rs).
HAND_BACK_SECONDS = 30
DEFAULT_DRAIN_SECONDS = 30
DEFAULT_HTTP_LISTEN = "127.0.0.1:9810"

# API groups of the custom resources, checked by hand (kubernetes-validate
# has schemas for the built-in kinds only).
CUSTOM_KINDS = {
    ("keda.sh", "ScaledObject"),
    ("monitoring.coreos.com", "ServiceMonitor"),
    ("monitoring.coreos.com", "PrometheusRule"),
}

INIT_PROGRAMS = {"tini", "tini-static", "dumb-init"}


class Section:
    """The outcome of one group of checks: what was checked, what failed."""

    def __init__(self, title: str) -> None:
        self.title = title
        self.checked: list[str] = []
        self.problems: list[str] = []

    def note(self, text: str) -> None:
        self.checked.append(text)

    def fail(self, text: str) -> None:
        self.problems.append(text)


# ---------------------------------------------------------------- helpers


def parse_duration(text: str | int | float) -> float:
    """Seconds of a Loom or Nomad duration: "30s", "1m30s", "2h", or a bare
    number of seconds."""
    if isinstance(text, (int, float)):
        return float(text)
    text = str(text).strip()
    if re.fullmatch(r"\d+(\.\d+)?", text):
        return float(text)
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)", text)
    if not parts or "".join(n + u for n, u in parts) != text.replace(" ", ""):
        raise ValueError(f"{text!r} is not a duration")
    return sum(float(number) * units[unit] for number, unit in parts)


def listen_port(listen: str) -> int:
    return int(listen.rsplit(":", 1)[1])


def read_yaml_documents(path: Path) -> list[dict]:
    with path.open() as file:
        return [doc for doc in yaml.load_all(file, Loader=YAML_LOADER) if doc is not None]


def api_group(api_version: str) -> str:
    return api_version.split("/")[0] if "/" in api_version else ""


def object_name(doc: dict) -> str:
    return f"{doc.get('kind')} {doc.get('metadata', {}).get('name')}"


def env_map(container: dict) -> dict[str, dict]:
    return {item["name"]: item for item in container.get("env", []) or []}


# ---------------------------------------------------------------- derived files


class _LiteralDumper(yaml.SafeDumper):
    """Writes multi-line strings (PromQL, annotations) as literal blocks."""


def _represent_str(dumper: yaml.SafeDumper, data: str):
    style = "|" if "\n" in data else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", data, style=style)


_LiteralDumper.add_representer(str, _represent_str)


def prometheus_rule_text(repo: Path) -> str:
    rules = load_yaml((repo / RULES).read_text())
    rule = {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": {
            "name": "loom",
            "labels": {"app.kubernetes.io/part-of": "loom"},
        },
        "spec": {"groups": rules["groups"]},
    }
    header = (
        "# Loom's alert rules for the Prometheus Operator: spec.groups are the\n"
        f"# groups of {RULES} (its comments explain\n"
        "# each rule). Written by `scripts/check-deploy --write`; the check fails\n"
        "# while the two differ, so change the rules there and run it. Your\n"
        "# Prometheus selects rules by label (ruleSelector): add the label it\n"
        "# expects, e.g. `release: <your release>` for kube-prometheus-stack.\n"
    )
    body = yaml.dump(rule, Dumper=_LiteralDumper, sort_keys=False, width=1000, allow_unicode=True)
    return header + body


def deployed_registry_text(repo: Path) -> str:
    """The example registry with each relative program path made absolute,
    pointing into the image."""
    text = (repo / EXAMPLE_REGISTRY).read_text()
    pattern = re.compile(r'^(\s*command\s*=\s*\[\s*")(?!/)([^"]*/[^"]*)"', re.MULTILINE)
    body = pattern.sub(lambda m: f'{m.group(1)}{IMAGE_EXAMPLE_DIR}/{m.group(2)}"', text)
    header = (
        "# The registry of the value-first example\n"
        f"# ({EXAMPLE_REGISTRY}) as deployed: every program\n"
        f"# path points into the image ({IMAGE_EXAMPLE_DIR}/bin/),\n"
        "# where deploy/Dockerfile puts the example, so that the registry can live\n"
        "# anywhere (a ConfigMap, a Nomad template). Written from the example by\n"
        "# `scripts/check-deploy --write`.\n"
        "\n"
    )
    return header + body


def derived_files(repo: Path) -> dict[str, str]:
    """Each derived file and the text it must have."""
    derived = {
        PROMETHEUS_RULE: prometheus_rule_text(repo),
        K8S_REGISTRY: deployed_registry_text(repo),
        NOMAD_REGISTRY: deployed_registry_text(repo),
    }
    if (repo / NATS_AUTH).is_file():
        derived[K8S_NATS_AUTH] = (repo / NATS_AUTH).read_text()
    return derived


def write_derived(repo: Path) -> list[str]:
    written = []
    for relative, text in derived_files(repo).items():
        path = repo / relative
        if not path.is_file() or path.read_text() != text:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
            written.append(relative)
    return written


def check_derived(repo: Path) -> Section:
    section = Section("derived files")
    if not (repo / NATS_AUTH).is_file():
        section.fail(f"{NATS_AUTH} does not exist: {K8S_NATS_AUTH} is a copy of it")
    try:
        expected = derived_files(repo)
    except (OSError, yaml.YAMLError, KeyError) as error:
        section.fail(f"cannot derive the files from their sources: {error}")
        return section

    # The PrometheusRule: compare the rules first, then the text.
    rule_path = repo / PROMETHEUS_RULE
    if rule_path.is_file():
        try:
            actual_groups = load_yaml(rule_path.read_text())["spec"]["groups"]
            source_groups = load_yaml((repo / RULES).read_text())["groups"]
            if actual_groups != source_groups:
                section.fail(
                    f"{PROMETHEUS_RULE}: spec.groups differ from the groups of {RULES} "
                    f"({describe_rule_difference(source_groups, actual_groups)}); "
                    "run scripts/check-deploy --write"
                )
        except (yaml.YAMLError, KeyError, TypeError) as error:
            section.fail(f"{PROMETHEUS_RULE}: has no spec.groups ({error})")

    for relative, text in expected.items():
        path = repo / relative
        if not path.is_file():
            section.fail(f"{relative} does not exist; run scripts/check-deploy --write")
        elif path.read_text() != text:
            if relative == PROMETHEUS_RULE and not any(PROMETHEUS_RULE in p for p in section.problems):
                section.fail(f"{relative} is not what scripts/check-deploy --write makes of {RULES}; run it")
            elif relative != PROMETHEUS_RULE:
                source = NATS_AUTH if relative == K8S_NATS_AUTH else EXAMPLE_REGISTRY
                section.fail(f"{relative} differs from {source}; run scripts/check-deploy --write")
        else:
            section.note(f"{relative} matches its source")

    registry = repo / K8S_REGISTRY
    if registry.is_file():
        text = registry.read_text()
        if "{{" in text:
            section.fail(f"{K8S_REGISTRY}: contains '{{{{', which a Nomad template would read as template syntax")
    return section


def describe_rule_difference(source: list, actual: list) -> str:
    source_rules = {(g.get("name"), r.get("alert") or r.get("record")): r for g in source for r in g.get("rules", [])}
    actual_rules = {(g.get("name"), r.get("alert") or r.get("record")): r for g in actual for r in g.get("rules", [])}
    missing = sorted(f"{g}/{n}" for g, n in source_rules.keys() - actual_rules.keys())
    extra = sorted(f"{g}/{n}" for g, n in actual_rules.keys() - source_rules.keys())
    changed = sorted(f"{g}/{n}" for (g, n), r in source_rules.items() if (g, n) in actual_rules and actual_rules[(g, n)] != r)
    parts = []
    if missing:
        parts.append("missing " + ", ".join(missing))
    if extra:
        parts.append("extra " + ", ".join(extra))
    if changed:
        parts.append("changed " + ", ".join(changed))
    return "; ".join(parts) or "group names or order differ"


# ---------------------------------------------------------------- Dockerfile


class DockerIgnore:
    """The .dockerignore rules: patterns matched against paths relative to the
    build context, the last matching pattern deciding; `!` re-includes."""

    def __init__(self, text: str) -> None:
        self.rules: list[tuple[bool, re.Pattern]] = []
        for line in text.splitlines():
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            include = line.startswith("!")
            pattern = os.path.normpath(line[1:] if include else line).lstrip("/")
            self.rules.append((include, re.compile(self._regex(pattern))))

    @staticmethod
    def _regex(pattern: str) -> str:
        out = ""
        i = 0
        while i < len(pattern):
            if pattern.startswith("**/", i):
                out += "(?:.*/)?"
                i += 3
            elif pattern.startswith("**", i):
                out += ".*"
                i += 2
            elif pattern[i] == "*":
                out += "[^/]*"
                i += 1
            elif pattern[i] == "?":
                out += "[^/]"
                i += 1
            else:
                out += re.escape(pattern[i])
                i += 1
        return out

    def excluded(self, path: str) -> bool:
        """Whether `path` (relative, `/`-separated) is left out of the context:
        a path is out when it or one of its parent directories is."""
        parts = path.strip("/").split("/")
        for depth in range(1, len(parts) + 1):
            prefix = "/".join(parts[:depth])
            decision = None
            for include, regex in self.rules:
                if regex.fullmatch(prefix):
                    decision = not include
            if decision:
                # A re-included descendant is still sent (Docker walks into
                # excluded directories that have exceptions below them).
                if not self._reincluded_below(path, depth, parts):
                    return True
        return False

    def _reincluded_below(self, path: str, depth: int, parts: list[str]) -> bool:
        for later in range(depth + 1, len(parts) + 1):
            prefix = "/".join(parts[:later])
            decision = None
            for include, regex in self.rules:
                if regex.fullmatch(prefix):
                    decision = include
            if decision:
                return True
        return False


def split_flags(value: str) -> tuple[dict[str, str], list[str]]:
    words = value.split()
    flags = {}
    while words and words[0].startswith("--"):
        flag = words.pop(0)[2:]
        name, _, flag_value = flag.partition("=")
        flags[name] = flag_value
    return flags, words


def check_dockerfile(repo: Path) -> Section:
    section = Section(f"image ({DOCKERFILE})")
    path = repo / DOCKERFILE
    if not path.is_file():
        section.fail(f"{DOCKERFILE} does not exist")
        return section
    parser = DockerfileParser(fileobj=io.BytesIO(path.read_bytes()))
    instructions = parser.structure
    ignore_path = repo / DOCKERIGNORE
    ignore = DockerIgnore(ignore_path.read_text() if ignore_path.is_file() else "")

    stages: list[dict] = []
    for instruction in instructions:
        if instruction["instruction"] == "FROM":
            words = instruction["value"].split()
            flags, words = split_flags(instruction["value"])
            name = words[2] if len(words) >= 3 and words[1].lower() == "as" else None
            stages.append({"image": words[0] if words else "", "name": name, "instructions": []})
        elif stages:
            stages[-1]["instructions"].append(instruction)
    if len(stages) < 2:
        section.fail(f"{DOCKERFILE}: has {len(stages)} stage(s); it must be multi-stage (build in one, run in a small final one)")
        if not stages:
            return section
    else:
        section.note(f"{len(stages)} stages: " + ", ".join(s["name"] or s["image"] for s in stages))
    final = stages[-1]
    if final["image"].startswith("rust:") or final["image"].startswith("rust@"):
        section.fail(f"{DOCKERFILE}: the final stage is built on {final['image']}; it must be a small runtime image, not the Rust toolchain")

    # The final stage runs as a user other than root.
    users = [i["value"].strip() for i in final["instructions"] if i["instruction"] == "USER"]
    if not users:
        section.fail(f"{DOCKERFILE}: the final stage has no USER, so the image runs as root")
    else:
        user = users[-1].split(":")[0]
        if user in ("root", "0"):
            section.fail(f"{DOCKERFILE}: the final stage runs as root (USER {users[-1]}); use a non-root user")
        elif not user.isdigit():
            section.fail(f"{DOCKERFILE}: USER {users[-1]} is not numeric, so Kubernetes' runAsNonRoot cannot verify it")
        else:
            section.note(f"the final stage runs as user {users[-1]}")

    # ENTRYPOINT: loom, in exec form, maybe behind an init (tini).
    entrypoints = [i["value"].strip() for i in final["instructions"] if i["instruction"] == "ENTRYPOINT"]
    if not entrypoints:
        section.fail(f"{DOCKERFILE}: the final stage has no ENTRYPOINT; it must run loom")
    else:
        try:
            argv = json.loads(entrypoints[-1])
        except json.JSONDecodeError:
            argv = None
        if not isinstance(argv, list) or not argv:
            section.fail(f"{DOCKERFILE}: ENTRYPOINT {entrypoints[-1]} is not in exec form (a JSON list), so a shell would get the signals instead of loom")
        else:
            program = argv
            if os.path.basename(program[0]) in INIT_PROGRAMS:
                program = [word for word in program[1:] if not word.startswith("-")]
            if not program or os.path.basename(program[0]) != "loom":
                section.fail(f"{DOCKERFILE}: ENTRYPOINT {entrypoints[-1]} does not run loom")
            else:
                section.note(f"ENTRYPOINT {entrypoints[-1]}")

    # COPY/ADD sources: in the repository and in the build context.
    stage_names = {s["name"] for s in stages if s["name"]}
    n_sources = 0
    for stage in stages:
        for instruction in stage["instructions"]:
            if instruction["instruction"] not in ("COPY", "ADD"):
                continue
            flags, words = split_flags(instruction["value"])
            if words and words[0].startswith("["):
                try:
                    words = json.loads(" ".join(words))
                except json.JSONDecodeError:
                    section.fail(f"{DOCKERFILE}:{instruction['startline'] + 1}: cannot read {instruction['instruction']} {instruction['value']}")
                    continue
            sources = words[:-1]
            if "from" in flags:
                if flags["from"] not in stage_names and not flags["from"].isdigit():
                    section.fail(f"{DOCKERFILE}:{instruction['startline'] + 1}: COPY --from={flags['from']} names no stage of this Dockerfile")
                continue
            for source in sources:
                n_sources += 1
                relative = source.strip("/")
                matches = [m for m in repo.glob(relative)] if any(c in relative for c in "*?[") else [repo / relative]
                if not matches or not all(m.exists() for m in matches):
                    section.fail(f"{DOCKERFILE}:{instruction['startline'] + 1}: {instruction['instruction']} source {source} does not exist in the repository")
                elif ignore.excluded(relative.rstrip("/") or "."):
                    section.fail(f"{DOCKERFILE}:{instruction['startline'] + 1}: {instruction['instruction']} source {source} is excluded by {DOCKERIGNORE}")
    section.note(f"{n_sources} COPY sources exist and are in the build context")

    # The deployed registries run the example's programs from the image.
    example_copied = False
    for instruction in final["instructions"]:
        if instruction["instruction"] == "COPY":
            flags, words = split_flags(instruction["value"])
            if "from" not in flags and len(words) >= 2 and words[0].strip("/") == "examples/value-first" and words[-1].rstrip("/") == IMAGE_EXAMPLE_DIR:
                example_copied = True
    if not example_copied:
        section.fail(f"{DOCKERFILE}: the final stage does not COPY examples/value-first/ to {IMAGE_EXAMPLE_DIR}/, where the deployed registries run its programs")
    else:
        section.note(f"the example registry is in the image at {IMAGE_EXAMPLE_DIR}")

    # The build: cargo build --locked (the lock file decides every version).
    cargo_builds = [
        i for s in stages[:-1] for i in s["instructions"]
        if i["instruction"] == "RUN" and re.search(r"\bcargo\s+build\b", i["value"])
    ]
    if not cargo_builds:
        section.fail(f"{DOCKERFILE}: no build stage runs `cargo build`")
    for instruction in cargo_builds:
        command = re.search(r"\bcargo\s+build\b[^&;|]*", instruction["value"]).group(0)
        if "--locked" not in command.split():
            section.fail(f"{DOCKERFILE}:{instruction['startline'] + 1}: `{command.strip()}` lacks --locked, so the build may use other versions than Cargo.lock")
        elif "--release" not in command.split():
            section.fail(f"{DOCKERFILE}:{instruction['startline'] + 1}: `{command.strip()}` lacks --release")
        else:
            section.note(f"`{command.strip()}`")
    return section


# ---------------------------------------------------------------- Kubernetes


def kustomization_files(repo: Path) -> list[Path]:
    return sorted((repo / KUBERNETES_DIR).rglob("kustomization.yaml"))


def check_kustomizations(repo: Path, section: Section) -> set[Path]:
    """Checks that every file a kustomization names exists; returns the
    manifest files they name."""
    named: set[Path] = set()
    for kustomization in kustomization_files(repo):
        relative = kustomization.relative_to(repo)
        base = kustomization.parent
        try:
            data = load_yaml(kustomization.read_text()) or {}
        except yaml.YAMLError as error:
            section.fail(f"{relative}: is not YAML: {error}")
            continue
        if data.get("kind") != "Kustomization":
            section.fail(f"{relative}: kind is {data.get('kind')!r}, not Kustomization")

        def must_exist(entry: str, what: str, inside: bool) -> Path | None:
            target = (base / entry).resolve()
            if inside and base.resolve() not in (target, *target.parents):
                section.fail(f"{relative}: {what} {entry} is outside the kustomization's directory, which kustomize refuses to read")
                return None
            if not target.exists():
                section.fail(f"{relative}: {what} {entry} does not exist")
                return None
            return target

        n_files = 0
        for entry in (data.get("resources") or []) + (data.get("components") or []):
            target = must_exist(entry, "resource", inside=False)
            if target is None:
                continue
            n_files += 1
            if target.is_dir():
                if not (target / "kustomization.yaml").is_file():
                    section.fail(f"{relative}: resource {entry} is a directory without kustomization.yaml")
            else:
                named.add(target)
        for generator in (data.get("configMapGenerator") or []) + (data.get("secretGenerator") or []):
            for entry in (generator.get("files") or []):
                must_exist(entry.split("=", 1)[-1], f"file of {generator.get('name')}", inside=True)
                n_files += 1
            for entry in (generator.get("envs") or []):
                must_exist(entry, f"env file of {generator.get('name')}", inside=True)
                n_files += 1
        for patch in data.get("patches") or []:
            if "path" in patch:
                must_exist(patch["path"], "patch", inside=True)
                n_files += 1
        section.note(f"{relative}: the {n_files} files and directories it names exist")
    return named


def generated_config_maps(repo: Path) -> dict[str, list[str]]:
    """ConfigMaps of the base kustomization's generators: name -> file keys."""
    data = load_yaml((repo / BASE_DIR / "kustomization.yaml").read_text()) or {}
    maps = {}
    for generator in data.get("configMapGenerator") or []:
        keys = []
        for entry in generator.get("files") or []:
            key, _, path = entry.rpartition("=")
            keys.append(key or Path(path).name)
        maps[generator["name"]] = keys
    return maps


def validate_builtin(doc: dict, where: str, section: Section) -> bool:
    try:
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
        return True
    except kubernetes_validate.ValidationError as error:
        path = ".".join(str(p) for p in error.absolute_path) or "(top)"
        section.fail(f"{where}: {object_name(doc)}: {path}: {error.message}")
    except kubernetes_validate.SchemaNotFoundError as error:
        section.fail(f"{where}: {object_name(doc)}: {error.message}")
    except (KeyError, TypeError) as error:
        section.fail(f"{where}: a document without apiVersion or kind ({error})")
    return False


def check_scaled_object(doc: dict, where: str, context: dict, section: Section) -> None:
    name = object_name(doc)
    spec = doc.get("spec") or {}
    target = (spec.get("scaleTargetRef") or {}).get("name")
    if target not in context["deployments"]:
        section.fail(f"{where}: {name}: scaleTargetRef.name {target!r} is no Deployment of the manifests")
    low, high = spec.get("minReplicaCount", 0), spec.get("maxReplicaCount", 100)
    if not (isinstance(low, int) and isinstance(high, int) and 0 <= low <= high):
        section.fail(f"{where}: {name}: minReplicaCount {low} and maxReplicaCount {high} are not 0 <= min <= max")
    triggers = spec.get("triggers") or []
    if not triggers:
        section.fail(f"{where}: {name}: has no triggers")
    consumers = set()
    for index, trigger in enumerate(triggers):
        label = f"{where}: {name}: trigger {index}"
        if trigger.get("type") != "nats-jetstream":
            section.fail(f"{label}: type is {trigger.get('type')!r}, not nats-jetstream")
            continue
        metadata = trigger.get("metadata") or {}
        for key in ("natsServerMonitoringEndpoint", "account", "stream", "consumer", "lagThreshold"):
            if not isinstance(metadata.get(key), str) or not metadata.get(key):
                section.fail(f"{label}: metadata.{key} is missing (KEDA reads it as a string)")
        if metadata.get("stream") and metadata["stream"] != context["runs_stream"]:
            section.fail(f"{label}: stream {metadata['stream']!r} is not the run stream {context['runs_stream']}")
        if isinstance(metadata.get("lagThreshold"), str) and not metadata["lagThreshold"].isdigit():
            section.fail(f"{label}: lagThreshold {metadata['lagThreshold']!r} is not a whole number")
        endpoint = metadata.get("natsServerMonitoringEndpoint") or ""
        host, _, port = endpoint.rpartition(":")
        service = host.split(".")[0]
        if port != str(context["nats_monitor_port"]) or service not in context["nats_monitor_services"]:
            section.fail(
                f"{label}: natsServerMonitoringEndpoint {endpoint!r} is not a NATS Service on the monitoring port "
                f"{context['nats_monitor_port']} ({', '.join(sorted(context['nats_monitor_services']))})"
            )
        if metadata.get("consumer"):
            consumers.add(metadata["consumer"])
    expected = {f"run-{worker}" for worker in context["workers"]}
    missing, extra = sorted(expected - consumers), sorted(consumers - expected)
    if missing:
        section.fail(f"{where}: {name}: no trigger for the run consumer(s) {', '.join(missing)} of registry workers")
    if extra:
        section.fail(f"{where}: {name}: trigger(s) for {', '.join(extra)}, which no registry worker has")
    if not missing and not extra and triggers:
        section.note(f"{name}: one nats-jetstream trigger per run consumer of {context['runs_stream']} ({len(consumers)})")


def selects(selector: dict, labels: dict) -> bool:
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for expression in selector.get("matchExpressions") or []:
        key, operator, values = expression.get("key"), expression.get("operator"), expression.get("values") or []
        if operator == "In" and labels.get(key) not in values:
            return False
        if operator == "NotIn" and labels.get(key) in values:
            return False
        if operator == "Exists" and key not in labels:
            return False
        if operator == "DoesNotExist" and key in labels:
            return False
    return True


def check_service_monitor(doc: dict, where: str, context: dict, section: Section) -> None:
    name = object_name(doc)
    spec = doc.get("spec") or {}
    selector = spec.get("selector")
    endpoints = spec.get("endpoints") or []
    if not selector:
        section.fail(f"{where}: {name}: has no spec.selector")
        return
    if not endpoints:
        section.fail(f"{where}: {name}: has no spec.endpoints")
        return
    selected = {svc["metadata"]["name"]: svc for svc in context["services"] if selects(selector, svc["metadata"].get("labels") or {})}
    wanted = {f"loom-{role}" for role in ROLES}
    missing = sorted(wanted - selected.keys())
    if missing:
        section.fail(f"{where}: {name}: does not select the Service(s) {', '.join(missing)}, so their metrics are not scraped")
    for endpoint in endpoints:
        port = endpoint.get("port")
        if endpoint.get("path", "/metrics") != "/metrics":
            section.fail(f"{where}: {name}: endpoint path {endpoint.get('path')!r} is not /metrics")
        for service_name in sorted(wanted & selected.keys()):
            ports = {p.get("name") for p in selected[service_name]["spec"].get("ports", [])}
            if port not in ports:
                section.fail(f"{where}: {name}: endpoint port {port!r} is no port of Service {service_name}")
    if not missing:
        section.note(f"{name}: scrapes /metrics of {', '.join(sorted(wanted))}")


def check_prometheus_rule(doc: dict, where: str, context: dict, section: Section) -> None:
    name = object_name(doc)
    groups = (doc.get("spec") or {}).get("groups")
    if not isinstance(groups, list) or not groups:
        section.fail(f"{where}: {name}: has no spec.groups")
        return
    for group in groups:
        if not group.get("name") or not group.get("rules"):
            section.fail(f"{where}: {name}: a group without name or rules")
        for rule in group.get("rules") or []:
            if not (rule.get("alert") or rule.get("record")) or not rule.get("expr"):
                section.fail(f"{where}: {name}: group {group.get('name')}: a rule without alert/record or expr")
    section.note(f"{name}: {sum(len(g.get('rules') or []) for g in groups)} rules in {len(groups)} group(s)")


CUSTOM_CHECKS = {
    "ScaledObject": check_scaled_object,
    "ServiceMonitor": check_service_monitor,
    "PrometheusRule": check_prometheus_rule,
}


def check_custom(doc: dict, where: str, context: dict, section: Section) -> None:
    key = (api_group(doc.get("apiVersion", "")), doc.get("kind"))
    if key not in CUSTOM_KINDS:
        section.fail(f"{where}: {object_name(doc)}: no schema and no check for {doc.get('apiVersion')} {doc.get('kind')}")
        return
    if not (doc.get("metadata") or {}).get("name"):
        section.fail(f"{where}: {doc.get('kind')}: has no metadata.name")
        return
    expected_versions = {"keda.sh": "keda.sh/v1alpha1", "monitoring.coreos.com": "monitoring.coreos.com/v1"}
    if doc["apiVersion"] != expected_versions[key[0]]:
        section.fail(f"{where}: {object_name(doc)}: apiVersion {doc['apiVersion']} is not {expected_versions[key[0]]}")
    CUSTOM_CHECKS[doc["kind"]](doc, where, context, section)


def pod_spec(doc: dict) -> dict:
    return ((doc.get("spec") or {}).get("template") or {}).get("spec") or {}


def loom_containers(doc: dict) -> list[dict]:
    return [c for c in pod_spec(doc).get("containers", []) if str(c.get("image", "")).split(":")[0].split("/")[-1] == "loom"]


def check_loom_pod(doc: dict, where: str, role: str, context: dict, section: Section) -> None:
    """Checks that hold for every pod running loom: configuration, NATS
    credentials, probes, resources, security."""
    name = object_name(doc)
    spec = pod_spec(doc)
    containers = loom_containers(doc)
    if len(containers) != 1:
        section.fail(f"{where}: {name}: has {len(containers)} loom containers, not one")
        return
    container = containers[0]
    label = f"{where}: {name}"
    args = container.get("args") or []
    if not args or args[0] != role:
        section.fail(f"{label}: runs `loom {' '.join(args)}`, not `loom {role}`")

    volumes = {v["name"]: v for v in spec.get("volumes", []) or []}
    mounts = {m["mountPath"]: m for m in container.get("volumeMounts", []) or []}
    env = env_map(container)

    # The configuration: LOOM_CONFIG inside the mounted loom-config ConfigMap.
    config_path = (env.get("LOOM_CONFIG") or {}).get("value") or ""
    config_dir = str(Path(config_path).parent)
    mount = mounts.get(config_dir)
    if not config_path:
        section.fail(f"{label}: LOOM_CONFIG is not set, so loom reads no loom.toml")
    elif mount is None or (volumes.get(mount["name"], {}).get("configMap") or {}).get("name") != "loom-config":
        section.fail(f"{label}: LOOM_CONFIG {config_path} is not in a mount of the loom-config ConfigMap")
    elif Path(config_path).name not in context["config_map_keys"].get("loom-config", []):
        section.fail(f"{label}: LOOM_CONFIG {config_path}: the loom-config ConfigMap has no key {Path(config_path).name}")

    # NATS credentials: the role's user and its password from a Secret.
    user = (env.get("LOOM_NATS__USER") or {}).get("value")
    expected_user = "admin" if role == "init" else role
    if user != expected_user:
        section.fail(f"{label}: LOOM_NATS__USER is {user!r}, not the role's NATS user {expected_user!r}")
    password = ((env.get("LOOM_NATS__PASSWORD") or {}).get("valueFrom") or {}).get("secretKeyRef")
    if not password:
        section.fail(f"{label}: LOOM_NATS__PASSWORD does not come from a Secret")

    # Every non-optional Secret key exists in secrets.example.yaml.
    for item in env.values():
        reference = (item.get("valueFrom") or {}).get("secretKeyRef")
        if reference and not reference.get("optional"):
            keys = context["secret_keys"].get(reference.get("name"))
            if keys is None or reference.get("key") not in keys:
                section.fail(f"{label}: {item['name']} reads Secret {reference.get('name')} key {reference.get('key')}, which {K8S_SECRETS} does not show")

    # Probes on http.listen's port.
    if role != "init":
        ports = {p.get("name"): p.get("containerPort") for p in container.get("ports", []) or []}
        if context["http_port"] not in ports.values():
            section.fail(f"{label}: no containerPort {context['http_port']} (http.listen in {K8S_LOOM_TOML})")
        for probe_name, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
            probe = (container.get(probe_name) or {}).get("httpGet")
            if not probe:
                section.fail(f"{label}: has no {probe_name} (httpGet {path})")
                continue
            if probe.get("path") != path:
                section.fail(f"{label}: {probe_name} asks {probe.get('path')!r}, not {path}")
            port = probe.get("port")
            if ports.get(port, port) != context["http_port"]:
                section.fail(f"{label}: {probe_name} port {port!r} is not http.listen's port {context['http_port']}")

    # Resources.
    resources = container.get("resources") or {}
    requests, limits = resources.get("requests") or {}, resources.get("limits") or {}
    if "cpu" not in requests or "memory" not in requests:
        section.fail(f"{label}: resources.requests lacks cpu or memory")
    if "memory" not in limits:
        section.fail(f"{label}: resources.limits lacks memory")

    # Security.
    pod_security = spec.get("securityContext") or {}
    security = container.get("securityContext") or {}
    if not (security.get("runAsNonRoot", pod_security.get("runAsNonRoot"))):
        section.fail(f"{label}: runAsNonRoot is not set")
    if security.get("runAsUser", pod_security.get("runAsUser")) == 0:
        section.fail(f"{label}: runs as user 0 (root)")
    if security.get("allowPrivilegeEscalation") is not False:
        section.fail(f"{label}: allowPrivilegeEscalation is not false")
    if security.get("readOnlyRootFilesystem") is not True:
        section.fail(f"{label}: readOnlyRootFilesystem is not true")
    elif role != "init":
        # What Loom writes must then be a mounted, writable volume.
        writable = [context["data_dir"], "/tmp"]
        if role == "agent":
            writable.append(f"{IMAGE_EXAMPLE_DIR}/state")
        for directory in writable:
            if directory not in mounts or mounts[directory].get("readOnly"):
                section.fail(f"{label}: the root file system is read-only but {directory} is not a writable mount")


def check_nats(objects: list[tuple[str, dict]], repo: Path, context: dict, section: Section) -> None:
    statefulsets = [(w, d) for w, d in objects if d.get("kind") == "StatefulSet" and d["metadata"]["name"] == "nats"]
    if len(statefulsets) != 1:
        section.fail(f"{KUBERNETES_DIR}: there must be one StatefulSet `nats`; there are {len(statefulsets)}")
        return
    where, nats = statefulsets[0]
    spec = nats.get("spec") or {}
    replicas = spec.get("replicas", 1)
    if replicas < 3:
        section.fail(f"{where}: StatefulSet nats: {replicas} replicas; a JetStream cluster needs 3")
    if context["stream_replicas"] > replicas:
        section.fail(f"{K8S_LOOM_TOML}: streams.replicas {context['stream_replicas']} is more than the {replicas} NATS servers")
    headless = next((d for _, d in objects if d.get("kind") == "Service" and d["metadata"]["name"] == spec.get("serviceName")), None)
    if headless is None or (headless.get("spec") or {}).get("clusterIP") != "None":
        section.fail(f"{where}: StatefulSet nats: serviceName {spec.get('serviceName')!r} is no headless Service")
    elif 6222 not in {p.get("port") for p in headless["spec"].get("ports", [])}:
        section.fail(f"{where}: headless Service {spec.get('serviceName')}: no cluster port 6222")
    claims = {c["metadata"]["name"] for c in spec.get("volumeClaimTemplates") or []}
    container = (pod_spec(nats).get("containers") or [{}])[0]
    mounts = {m["name"]: m["mountPath"] for m in container.get("volumeMounts") or []}
    if not claims or not claims & mounts.keys():
        section.fail(f"{where}: StatefulSet nats: no PersistentVolumeClaim template mounted for the JetStream store")

    # The configuration files of the nats-config ConfigMap.
    keys = context["config_map_keys"].get("nats-config", [])
    conf_dir = repo / K8S_NATS_DIR
    if "nats-server.conf" not in keys:
        section.fail(f"{BASE_DIR}/kustomization.yaml: the nats-config ConfigMap has no nats-server.conf")
        return
    conf = (conf_dir / "nats-server.conf").read_text() if (conf_dir / "nats-server.conf").is_file() else ""
    if not re.search(r"^\s*jetstream\s*[{:]", conf, re.MULTILINE):
        section.fail(f"{K8S_NATS_DIR}/nats-server.conf: JetStream is not enabled (no jetstream block)")
    routes = re.findall(r"nats://([a-z0-9-]+)-(\d+)\.([a-z0-9-]+)(?:\.[a-z0-9.-]+)?:6222", conf)
    expected_routes = {("nats", str(i), spec.get("serviceName")) for i in range(replicas)}
    if set(routes) != expected_routes:
        section.fail(f"{K8S_NATS_DIR}/nats-server.conf: the cluster routes do not name the {replicas} servers nats-N.{spec.get('serviceName')}:6222")
    for include in re.findall(r"^\s*include\s+[\"']?([^\"'\s]+)", conf, re.MULTILINE):
        if Path(include).name not in keys:
            section.fail(f"{K8S_NATS_DIR}/nats-server.conf: includes {include}, which the nats-config ConfigMap lacks")
    # Every $VARIABLE the configuration reads is in the server's environment.
    texts = [conf] + [(conf_dir / k).read_text() for k in keys if k != "nats-server.conf" and (conf_dir / k).is_file()]
    variables, defined = set(), set()
    for text in texts:
        text = re.sub(r'"[^"\n]*"', '""', text)
        text = re.sub(r"#.*", "", text)
        variables |= set(re.findall(r"(?<![\w$])\$([A-Za-z_][A-Za-z0-9_]*)", text))
        defined |= set(re.findall(r"^\s*([A-Za-z_][A-Za-z0-9_]*)\s*[=:]", text, re.MULTILINE))
    variables -= defined
    env = set(env_map(container))
    for variable in sorted(variables - env):
        section.fail(f"{where}: StatefulSet nats: the NATS configuration reads ${variable}, which the container's env does not set")
    for item in env_map(container).values():
        reference = (item.get("valueFrom") or {}).get("secretKeyRef")
        if reference and reference.get("key") not in context["secret_keys"].get(reference.get("name"), set()):
            section.fail(f"{where}: StatefulSet nats: {item['name']} reads Secret {reference.get('name')} key {reference.get('key')}, which {K8S_SECRETS} does not show")
    run_nats_server_test(conf_dir, keys, variables, section, context)
    section.note(f"NATS: StatefulSet of {replicas} with JetStream, routes, PVCs; config reads {len(variables)} variables, all set")


def find_nats_server() -> str | None:
    """The nats-server scripts/install-nats-server provides, found the same
    way: $LOOM_NATS_SERVER, PATH, then .tools/nats/bin."""
    candidate = os.environ.get("LOOM_NATS_SERVER")
    if candidate and os.access(candidate, os.X_OK):
        return candidate
    on_path = shutil.which("nats-server")
    if on_path:
        return on_path
    local = HOME_REPO / ".tools/nats/bin/nats-server"
    return str(local) if os.access(local, os.X_OK) else None


def run_nats_server_test(conf_dir: Path, keys: list[str], variables: set[str], section: Section, context: dict) -> None:
    if not context.get("run_tools", True):
        return
    binary = find_nats_server()
    if binary is None:
        section.fail("no nats-server to test the NATS configuration with (`nats-server -t`): run scripts/install-nats-server")
        return
    with tempfile.TemporaryDirectory() as scratch:
        for key in keys:
            if (conf_dir / key).is_file():
                shutil.copy(conf_dir / key, Path(scratch) / key)
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}
        env.update({variable: "check-deploy" for variable in variables})
        result = subprocess.run(
            [binary, "-t", "-c", "nats-server.conf"], cwd=scratch, env=env,
            capture_output=True, text=True, timeout=60,
        )
    if result.returncode != 0:
        section.fail(f"{K8S_NATS_DIR}/nats-server.conf: `nats-server -t` refuses it: {(result.stderr or result.stdout).strip()}")
    else:
        section.note("nats-server -t accepts the NATS configuration")


def kubernetes_context(repo: Path, objects: list[tuple[str, dict]], section: Section) -> dict | None:
    try:
        loom_toml = tomllib.loads((repo / K8S_LOOM_TOML).read_text())
    except (OSError, tomllib.TOMLDecodeError) as error:
        section.fail(f"{K8S_LOOM_TOML}: cannot read it: {error}")
        return None
    registry_name = loom_toml.get("registry")
    workers = set(loom_toml.get("workers", {}))
    if registry_name:
        registry_path = (repo / K8S_LOOM_TOML).parent / registry_name
        try:
            workers |= set(tomllib.loads(registry_path.read_text()).get("workers", {}))
        except (OSError, tomllib.TOMLDecodeError) as error:
            section.fail(f"{K8S_LOOM_TOML}: registry {registry_name}: cannot read it: {error}")
    listen = (loom_toml.get("http") or {}).get("listen", DEFAULT_HTTP_LISTEN)
    if listen.startswith("127.") or listen.startswith("localhost") or listen.startswith("[::1]"):
        section.fail(f"{K8S_LOOM_TOML}: http.listen {listen} is a loopback address: the kubelet's probes and Prometheus cannot reach it")
    agent = loom_toml.get("agent") or {}
    try:
        drain = parse_duration(agent.get("drain_timeout", DEFAULT_DRAIN_SECONDS))
    except ValueError as error:
        section.fail(f"{K8S_LOOM_TOML}: agent.drain_timeout: {error}")
        drain = DEFAULT_DRAIN_SECONDS
    secret_keys: dict[str, set[str]] = {}
    if (repo / K8S_SECRETS).is_file():
        for doc in read_yaml_documents(repo / K8S_SECRETS):
            if doc.get("kind") == "Secret":
                secret_keys[doc["metadata"]["name"]] = set((doc.get("stringData") or {})) | set((doc.get("data") or {}))
    services = [d for _, d in objects if d.get("kind") == "Service"]
    nats_monitor_services = {
        s["metadata"]["name"] for s in services
        if (s["metadata"].get("labels") or {}).get("app.kubernetes.io/name") == "nats"
        and 8222 in {p.get("port") for p in s["spec"].get("ports", [])}
    }
    nats_url = (loom_toml.get("nats") or {}).get("url")
    urls = nats_url if isinstance(nats_url, list) else [nats_url] if nats_url else []
    if not urls:
        section.fail(f"{K8S_LOOM_TOML}: nats.url is not set, so the roles would look for a `loom up` of their own")
    client_services = {s["metadata"]["name"]: {p.get("port") for p in s["spec"].get("ports", [])} for s in services}
    for url in urls:
        match = re.fullmatch(r"nats://([^:/]+):(\d+)", url)
        if not match or match.group(1).split(".")[0] not in client_services or int(match.group(2)) not in client_services[match.group(1).split(".")[0]]:
            section.fail(f"{K8S_LOOM_TOML}: nats.url {url} is not a Service port of the manifests")
    prefix = loom_toml.get("prefix", "loom")
    return {
        "repo": repo,
        "workers": workers,
        "http_port": listen_port(listen),
        "data_dir": loom_toml.get("data_dir", ".loom"),
        "drain": drain,
        "stream_replicas": (loom_toml.get("streams") or {}).get("replicas", 1),
        "runs_stream": f"{prefix.upper()}_RUNS",
        "secret_keys": secret_keys,
        "services": services,
        "deployments": {d["metadata"]["name"]: d for _, d in objects if d.get("kind") == "Deployment"},
        "nats_monitor_services": nats_monitor_services,
        "nats_monitor_port": 8222,
        "config_map_keys": generated_config_maps(repo),
    }


def check_kubernetes(repo: Path, render: bool = True, run_tools: bool = True) -> Section:
    section = Section(f"Kubernetes ({KUBERNETES_DIR}, schemas of Kubernetes {KUBERNETES_VERSION})")
    base = repo / KUBERNETES_DIR / "kustomization.yaml"
    if not base.is_file():
        section.fail(f"{KUBERNETES_DIR}/kustomization.yaml does not exist")
        return section
    named = check_kustomizations(repo, section)

    # Every manifest file: named by a kustomization (examples aside), and
    # valid against the schemas.
    objects: list[tuple[str, dict]] = []
    n_builtin = 0
    for path in sorted((repo / KUBERNETES_DIR).rglob("*.yaml")):
        relative = str(path.relative_to(repo))
        if path.name == "kustomization.yaml":
            continue
        if path.resolve() not in named and not path.name.endswith(".example.yaml"):
            section.fail(f"{relative}: no kustomization.yaml names it")
        try:
            docs = read_yaml_documents(path)
        except yaml.YAMLError as error:
            section.fail(f"{relative}: is not YAML: {error}")
            continue
        for doc in docs:
            if not isinstance(doc, dict) or "kind" not in doc or "apiVersion" not in doc:
                section.fail(f"{relative}: a document without apiVersion or kind")
                continue
            objects.append((relative, doc))
    context = kubernetes_context(repo, objects, section)
    if context is None:
        return section
    context["run_tools"] = run_tools
    for where, doc in objects:
        group = api_group(doc["apiVersion"])
        if (group, doc["kind"]) in CUSTOM_KINDS or ("." in group and not group.endswith(".k8s.io")):
            check_custom(doc, where, context, section)
        else:
            n_builtin += validate_builtin(doc, where, section)
    section.note(f"{n_builtin} built-in objects valid against the Kubernetes {KUBERNETES_VERSION} schemas (strict)")

    # The roles.
    for role, (deployment_name, _) in ROLES.items():
        doc = context["deployments"].get(deployment_name)
        where = next((w for w, d in objects if d is doc), KUBERNETES_DIR)
        if doc is None:
            section.fail(f"{KUBERNETES_DIR}: no Deployment {deployment_name} (the {role})")
            continue
        replicas = doc["spec"].get("replicas")
        if REPLICAS[role] is not None and replicas != REPLICAS[role]:
            section.fail(f"{where}: Deployment {deployment_name}: {replicas} replicas, not {REPLICAS[role]}")
        if role == "agent" and replicas is not None:
            section.fail(f"{where}: Deployment {deployment_name}: sets replicas ({replicas}), which every apply resets under the autoscaler; leave it out")
        check_loom_pod(doc, where, role, context, section)
        if role == "agent":
            grace = pod_spec(doc).get("terminationGracePeriodSeconds", 30)
            needed = context["drain"] + HAND_BACK_SECONDS
            if grace < needed:
                section.fail(
                    f"{where}: Deployment {deployment_name}: terminationGracePeriodSeconds {grace} is shorter than "
                    f"agent.drain_timeout ({context['drain']:g} s) plus the {HAND_BACK_SECONDS} s an agent takes to hand back the runs still going"
                )
            else:
                section.note(f"agents: terminationGracePeriodSeconds {grace} >= drain_timeout {context['drain']:g} s + {HAND_BACK_SECONDS} s hand-back")
    jobs = [(w, d) for w, d in objects if d.get("kind") == "Job"]
    if not any(loom_containers(d) and (loom_containers(d)[0].get("args") or [None])[0] == "init" for _, d in jobs):
        section.fail(f"{KUBERNETES_DIR}: no Job runs `loom init`")
    for where, doc in jobs:
        if loom_containers(doc):
            check_loom_pod(doc, where, "init", context, section)
    section.note("scheduler and validator x2, klaxon, agents, loom init: probes /healthz and /readyz, credentials, resources, non-root, read-only root")

    # ConfigMaps the pods mount are generated by the kustomization.
    for where, doc in objects:
        for volume in pod_spec(doc).get("volumes", []) or []:
            name = (volume.get("configMap") or {}).get("name")
            if name and name not in context["config_map_keys"]:
                section.fail(f"{where}: {object_name(doc)}: mounts ConfigMap {name}, which no configMapGenerator makes")
    check_nats(objects, repo, context, section)
    check_autoscaling(repo, objects, section)
    if render:
        render_kustomizations(repo, section)
    return section


def check_autoscaling(repo: Path, objects: list[tuple[str, dict]], section: Section) -> None:
    """deploy/kubernetes scales the agents with KEDA, deploy/kubernetes/hpa
    with an HPA; both build on base/, which has no autoscaler. Never two
    autoscalers on one Deployment."""
    before = len(section.problems)
    files = {w: d for w, d in objects}
    variants = {KUBERNETES_DIR: "ScaledObject", HPA_DIR: "HorizontalPodAutoscaler", BASE_DIR: None}
    for directory, wanted in variants.items():
        path = repo / directory / "kustomization.yaml"
        if not path.is_file():
            section.fail(f"{directory}/kustomization.yaml does not exist")
            continue
        data = load_yaml(path.read_text()) or {}
        resources = data.get("resources") or []
        kinds = [files[f"{directory}/{r}"]["kind"] for r in resources if f"{directory}/{r}" in files]
        scalers = [k for k in kinds if k in ("ScaledObject", "HorizontalPodAutoscaler")]
        if scalers != ([wanted] if wanted else []):
            section.fail(f"{directory}/kustomization.yaml: autoscalers {', '.join(scalers) or 'none'}; it must have {wanted or 'none'}")
        if wanted and os.path.relpath(repo / BASE_DIR, repo / directory) not in resources:
            section.fail(f"{directory}/kustomization.yaml: does not build on {BASE_DIR}")
    if len(section.problems) == before:
        section.note("autoscaling: a KEDA ScaledObject in deploy/kubernetes, a CPU HorizontalPodAutoscaler instead in hpa/, none in base/")


def render_kustomizations(repo: Path, section: Section) -> None:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        section.note("kubectl not found: the kustomizations were checked file by file, not rendered")
        return
    for kustomization in kustomization_files(repo):
        directory = kustomization.parent
        relative = directory.relative_to(repo)
        result = subprocess.run([kubectl, "kustomize", str(directory)], capture_output=True, text=True, timeout=120)
        if result.returncode != 0:
            section.fail(f"{relative}: `kubectl kustomize` fails: {result.stderr.strip()}")
            continue
        docs = [d for d in yaml.load_all(result.stdout, Loader=YAML_LOADER) if d]
        before = len(section.problems)
        autoscalers = []
        for doc in docs:
            group = api_group(doc["apiVersion"])
            if (group, doc["kind"]) not in CUSTOM_KINDS:
                validate_builtin(doc, f"{relative} (rendered)", section)
            if doc["kind"] in ("ScaledObject", "HorizontalPodAutoscaler"):
                autoscalers.append(doc["kind"])
            if doc["kind"] != "Namespace" and doc.get("metadata", {}).get("namespace") != "loom":
                section.fail(f"{relative} (rendered): {object_name(doc)} is not in the namespace loom")
        wanted = 0 if str(relative) == BASE_DIR else 1
        if len(autoscalers) != wanted:
            section.fail(f"{relative} (rendered): {len(autoscalers)} autoscalers ({', '.join(autoscalers) or 'none'}) for the agents, not {wanted}")
        if len(section.problems) == before:
            scaled = f", {autoscalers[0]} for the agents" if autoscalers else ""
            section.note(f"{relative}: `kubectl kustomize` renders {len(docs)} valid objects{scaled}")


# ---------------------------------------------------------------- Nomad


def hcl_string(value) -> str:
    """A string attribute as written, without the heredoc markers."""
    text = str(value)
    match = re.fullmatch(r"<<(-?)([A-Z_]+)\n(.*?)\n?\s*\2", text, re.DOTALL)
    if match:
        body = match.group(3) + "\n"
        return textwrap.dedent(body) if match.group(1) else body
    return text


def blocks(parent: dict, kind: str) -> list[tuple[str, dict]]:
    """Labelled blocks (`group "x" {}`) as (label, body) pairs."""
    found = []
    for entry in parent.get(kind, []) or []:
        for label, body in entry.items():
            found.append((label, body))
    return found


def unlabelled(parent: dict, kind: str) -> list[dict]:
    return list(parent.get(kind, []) or [])


def check_nomad(repo: Path) -> Section:
    section = Section(f"Nomad ({NOMAD_JOB})")
    path = repo / NOMAD_JOB
    if not path.is_file():
        section.fail(f"{NOMAD_JOB} does not exist")
        return section
    options = SerializationOptions(with_comments=False, explicit_blocks=False, strip_string_quotes=True)
    try:
        with path.open() as file:
            job_file = hcl2.load(file, serialization_options=options)
    except Exception as error:  # python-hcl2 raises lark's exceptions
        section.fail(f"{NOMAD_JOB}: is not valid HCL: {str(error).splitlines()[0]}")
        return section
    section.note("parses as HCL")

    variables = dict(blocks(job_file, "variable"))
    locals_ = {}
    for entry in unlabelled(job_file, "locals"):
        locals_.update(entry)
    jobs = blocks(job_file, "job")
    if len(jobs) != 1:
        section.fail(f"{NOMAD_JOB}: has {len(jobs)} jobs, not one")
        return section
    job_name, job = jobs[0]
    groups = dict(blocks(job, "group"))
    expected_groups = {group for _, group in ROLES.values()}
    if set(groups) != expected_groups:
        section.fail(f"{NOMAD_JOB}: job {job_name}: groups {', '.join(sorted(groups)) or 'none'}, not {', '.join(sorted(expected_groups))}")

    for role, (_, group_name) in ROLES.items():
        group = groups.get(group_name)
        if group is None:
            continue
        label = f"{NOMAD_JOB}: group {group_name}"
        count = group.get("count", 1)
        if REPLICAS[role] is not None and count != REPLICAS[role]:
            section.fail(f"{label}: count {count}, not {REPLICAS[role]}")
        elif not isinstance(count, int) or count < 1:
            section.fail(f"{label}: count {count!r} is not a number of at least 1")

        ports = {}
        for network in unlabelled(group, "network"):
            for port_label, port in blocks(network, "port"):
                ports[port_label] = port.get("to")
        tasks = dict(blocks(group, "task"))
        task = tasks.get("loom")
        if task is None:
            section.fail(f"{label}: has no task \"loom\"")
            continue
        check_nomad_task(role, label, task, ports, variables, locals_, repo, section)
        check_nomad_services(label, group, ports, section)
    if not section.problems:
        section.note("groups scheduler (2), validator (2), klaxon, agents; each a docker task `loom <role>` with checks on /healthz and /readyz")
    return section


def check_nomad_services(label: str, group: dict, ports: dict, section: Section) -> None:
    services = unlabelled(group, "service")
    if not services:
        section.fail(f"{label}: has no service block")
        return
    paths = set()
    for service in services:
        if service.get("port") not in ports:
            section.fail(f"{label}: service port {service.get('port')!r} is no port of the group's network")
        for check in unlabelled(service, "check"):
            if check.get("type") == "http":
                paths.add(check.get("path"))
    for path in ("/healthz", "/readyz"):
        if path not in paths:
            section.fail(f"{label}: no http check on {path}")


def check_nomad_task(role: str, label: str, task: dict, ports: dict, variables: dict, locals_: dict, repo: Path, section: Section) -> None:
    label = f"{label}: task loom"
    if task.get("driver") != "docker":
        section.fail(f"{label}: driver {task.get('driver')!r}, not docker")
    config = (unlabelled(task, "config") or [{}])[0]
    if "var.image" not in str(config.get("image", "")):
        section.fail(f"{label}: image {config.get('image')!r} is not var.image")
    args = config.get("args") or []
    if not args or args[0] != role:
        section.fail(f"{label}: runs `loom {' '.join(map(str, args))}`, not `loom {role}`")
    env = {}
    for entry in unlabelled(task, "env"):
        env.update(entry)
    if env.get("LOOM_NATS__USER") != role:
        section.fail(f"{label}: LOOM_NATS__USER is {env.get('LOOM_NATS__USER')!r}, not the role's NATS user {role!r}")

    templates = unlabelled(task, "template")
    by_destination = {str(t.get("destination", "")): t for t in templates}
    job_dir = repo / Path(NOMAD_JOB).parent

    # loom.toml, where LOOM_CONFIG points.
    config_path = str(env.get("LOOM_CONFIG", ""))
    destination = re.sub(r"^(\$\{NOMAD_TASK_DIR\}|/local)/", "local/", config_path)
    config_template = by_destination.get(destination)
    if not config_path or config_template is None:
        section.fail(f"{label}: LOOM_CONFIG {config_path!r} is not rendered by a template")
        return
    loom_toml = template_text(config_template, variables, locals_, job_dir, label, "loom.toml", section)
    if loom_toml is None:
        return
    try:
        settings = tomllib.loads(loom_toml)
    except tomllib.TOMLDecodeError as error:
        section.fail(f"{label}: the loom.toml template is not TOML: {error}")
        return
    listen = (settings.get("http") or {}).get("listen", DEFAULT_HTTP_LISTEN)
    if listen.startswith("127.") or listen.startswith("localhost"):
        section.fail(f"{label}: http.listen {listen} is a loopback address: the checks cannot reach it")
    if listen_port(listen) not in ports.values():
        section.fail(f"{label}: http.listen's port {listen_port(listen)} is no port the group maps (to = ...)")
    if not (settings.get("nats") or {}).get("url") and "var.nats_urls" not in str(env.get("LOOM_NATS__URL", "")):
        section.fail(f"{label}: neither loom.toml nor LOOM_NATS__URL names the NATS servers")

    # The registry, next to loom.toml.
    registry = settings.get("registry")
    registry_destination = str(Path(destination).parent / registry) if registry else None
    registry_template = by_destination.get(registry_destination) if registry_destination else None
    if registry_template is None:
        section.fail(f"{label}: no template renders the registry ({registry_destination or 'loom.toml names none'})")
    else:
        template_text(registry_template, variables, locals_, job_dir, label, "registry", section)

    # The NATS password, from Nomad variables or Vault.
    secret_templates = [
        t for t in templates
        if t.get("env") is True and "LOOM_NATS__PASSWORD" in str(t.get("data", ""))
        and re.search(r"nomadVar|with secret|\bsecret \"", str(t.get("data", "")))
    ]
    if not secret_templates:
        section.fail(f"{label}: LOOM_NATS__PASSWORD does not come from a template (env = true) reading a Nomad variable or Vault")

    # kill_timeout: the agents' covers the drain.
    if role == "agent":
        drain = parse_duration((settings.get("agent") or {}).get("drain_timeout", DEFAULT_DRAIN_SECONDS))
        needed = drain + HAND_BACK_SECONDS
        if "kill_timeout" not in task:
            section.fail(
                f"{label}: has no kill_timeout, so Nomad kills the agent 5 s after the signal, cutting its drain "
                f"(agent.drain_timeout {drain:g} s + {HAND_BACK_SECONDS} s hand-back)"
            )
        else:
            kill = parse_duration(task["kill_timeout"])
            if kill < needed:
                section.fail(
                    f"{label}: kill_timeout {task['kill_timeout']} is shorter than agent.drain_timeout ({drain:g} s) "
                    f"plus the {HAND_BACK_SECONDS} s an agent takes to hand back the runs still going"
                )
            else:
                section.note(f"agents: kill_timeout {task['kill_timeout']} >= drain_timeout {drain:g} s + {HAND_BACK_SECONDS} s hand-back")
    if task.get("kill_signal") not in (None, "SIGTERM", "SIGINT"):
        section.fail(f"{label}: kill_signal {task.get('kill_signal')} is neither SIGTERM nor SIGINT, which loom stops on")


def template_text(template: dict, variables: dict, locals_: dict, job_dir: Path, label: str, what: str, section: Section) -> str | None:
    """What a template renders, when it is a file read by file() (relative
    to the job's directory), a local or an inline string; None after a
    failure."""
    data = str(template.get("data", ""))
    match = re.fullmatch(r"\$\{file\((.+)\)\}", data)
    if match:
        argument = match.group(1).strip()
        name = str((variables.get(argument[4:]) or {}).get("default", "")) if argument.startswith("var.") else argument.strip('"')
        path = job_dir / name
        if not path.is_file():
            section.fail(f"{label}: the {what} template reads {name}, which does not exist beside the job")
            return None
        text = path.read_text()
    else:
        local = re.fullmatch(r"\$\{local\.(\w+)\}", data)
        text = hcl_string(locals_.get(local.group(1), "") if local else data)
    if "{{" in text:
        section.fail(f"{label}: the {what} template's text contains '{{{{', which Nomad would read as template syntax")
    return text


# ---------------------------------------------------------------- running


def run_checks(repo: Path, render: bool = True, run_tools: bool = True) -> list[Section]:
    return [
        check_dockerfile(repo),
        check_kubernetes(repo, render=render, run_tools=run_tools),
        check_nomad(repo),
        check_derived(repo),
    ]


def report(sections: list[Section], out=sys.stdout) -> int:
    problems = 0
    for section in sections:
        print(f"-- {section.title}", file=out)
        for text in section.checked:
            print(f"   ok    {text}", file=out)
        for text in section.problems:
            print(f"   FAIL  {text}", file=out)
        problems += len(section.problems)
    if problems:
        print(f"check-deploy: {problems} problem(s) in the deployment files", file=out)
        return 1
    print("check-deploy: the deployment files pass every check", file=out)
    return 0
