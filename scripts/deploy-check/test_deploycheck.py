"""Self-tests of scripts/check-deploy: each test breaks one thing in a copy
of the deployment files and asserts that the check meant to catch it fails
with its message. The unchanged copy must pass.

Run by `scripts/check-deploy` (after the real checks) and by
`scripts/check-deploy --self-test`.
"""

import shutil
import tempfile
import textwrap
import unittest
from pathlib import Path

import deploycheck as dc

REPO = Path(__file__).resolve().parents[2]

# The top-level entries deploy/Dockerfile copies; the copy gets empty ones.
BUILD_INPUTS = ["protocol", "config", "broker", "scheduler", "agent", "workers", "validator", "klaxon", "cli", "testkit", "tests"]


class BrokenCopy(unittest.TestCase):
    """A scratch repository holding a copy of the deployment files."""

    def setUp(self) -> None:
        self.scratch = tempfile.TemporaryDirectory()
        self.repo = Path(self.scratch.name)
        shutil.copytree(REPO / "deploy", self.repo / "deploy")
        shutil.copy(REPO / ".dockerignore", self.repo / ".dockerignore")
        for name in ("Cargo.toml", "Cargo.lock"):
            (self.repo / name).write_text("")
        for name in BUILD_INPUTS:
            (self.repo / name).mkdir()
        (self.repo / "examples/value-first").mkdir(parents=True)
        shutil.copy(REPO / dc.EXAMPLE_REGISTRY, self.repo / dc.EXAMPLE_REGISTRY)

    def tearDown(self) -> None:
        self.scratch.cleanup()

    def edit(self, relative: str, old: str, new: str, count: int = 1) -> None:
        path = self.repo / relative
        text = path.read_text()
        self.assertIn(old, text, f"the test's edit does not apply to {relative}")
        path.write_text(text.replace(old, new, count))

    def problems(self, check) -> list[str]:
        return check(self.repo).problems

    def assertFails(self, check, *fragments: str) -> None:
        problems = self.problems(check)
        for fragment in fragments:
            self.assertTrue(
                any(fragment in problem for problem in problems),
                f"no problem mentions {fragment!r}; the problems are:\n" + "\n".join(problems or ["(none)"]),
            )


def kubernetes(repo: Path) -> dc.Section:
    return dc.check_kubernetes(repo, render=False, run_tools=False)


class UnchangedCopy(BrokenCopy):
    def test_the_unchanged_copy_passes_every_check(self):
        for section in dc.run_checks(self.repo, render=False, run_tools=True):
            self.assertEqual(section.problems, [], section.title)


class Dockerfile(BrokenCopy):
    def test_root_user(self):
        self.edit(dc.DOCKERFILE, "USER 10001:10001", "USER root")
        self.assertFails(dc.check_dockerfile, "the final stage runs as root (USER root)")

    def test_no_user(self):
        self.edit(dc.DOCKERFILE, "USER 10001:10001\n", "")
        self.assertFails(dc.check_dockerfile, "the final stage has no USER")

    def test_a_user_only_in_the_builder_stage(self):
        self.edit(dc.DOCKERFILE, "USER 10001:10001\n", "")
        self.edit(dc.DOCKERFILE, "WORKDIR /src\n", "WORKDIR /src\nUSER 10001\n")
        self.assertFails(dc.check_dockerfile, "the final stage has no USER")

    def test_single_stage(self):
        (self.repo / dc.DOCKERFILE).write_text(textwrap.dedent("""\
            FROM debian:bookworm-slim
            COPY Cargo.toml /src/
            USER 10001
            ENTRYPOINT ["/usr/local/bin/loom"]
            """))
        self.assertFails(dc.check_dockerfile, "has 1 stage(s); it must be multi-stage", "no build stage runs `cargo build`")

    def test_entrypoint_is_not_loom(self):
        self.edit(dc.DOCKERFILE, '"/usr/local/bin/loom"]', '"/bin/sh"]')
        self.assertFails(dc.check_dockerfile, "does not run loom")

    def test_entrypoint_in_shell_form(self):
        self.edit(dc.DOCKERFILE, 'ENTRYPOINT ["/usr/bin/tini", "--", "/usr/local/bin/loom"]', "ENTRYPOINT /usr/local/bin/loom")
        self.assertFails(dc.check_dockerfile, "is not in exec form")

    def test_copy_source_missing(self):
        shutil.rmtree(self.repo / "examples")
        self.assertFails(dc.check_dockerfile, "COPY source examples/value-first/ does not exist in the repository")

    def test_copy_source_left_out_of_the_context(self):
        self.edit(dc.DOCKERIGNORE, "!cli/\n", "")
        self.assertFails(dc.check_dockerfile, "COPY source cli/ is excluded by .dockerignore")

    def test_example_not_in_the_image(self):
        self.edit(dc.DOCKERFILE, "COPY examples/value-first/ /opt/loom/examples/value-first/", "COPY examples/value-first/ /srv/example/")
        self.assertFails(dc.check_dockerfile, "does not COPY examples/value-first/ to /opt/loom/examples/value-first/")

    def test_cargo_build_without_locked(self):
        self.edit(dc.DOCKERFILE, "cargo build --release --locked -p loom-cli", "cargo build --release -p loom-cli")
        self.assertFails(dc.check_dockerfile, "lacks --locked")

    def test_copy_from_an_unknown_stage(self):
        self.edit(dc.DOCKERFILE, "COPY --from=builder", "COPY --from=build")
        self.assertFails(dc.check_dockerfile, "COPY --from=build names no stage")


class DockerIgnore(unittest.TestCase):
    def test_last_matching_pattern_decides(self):
        ignore = dc.DockerIgnore("*\n!cli/\n!examples/value-first/\n**/target/\nexamples/value-first/state/\n")
        self.assertTrue(ignore.excluded("README.md"))
        self.assertFalse(ignore.excluded("cli"))
        self.assertFalse(ignore.excluded("cli/src/main.rs"))
        self.assertTrue(ignore.excluded("cli/target/debug"))
        self.assertFalse(ignore.excluded("examples/value-first/bin/x.sh"))
        self.assertTrue(ignore.excluded("examples/value-first/state/report.md"))
        self.assertTrue(ignore.excluded("examples/other"))


class Kubernetes(BrokenCopy):
    def test_kustomization_names_a_missing_file(self):
        (self.repo / dc.BASE_DIR / "scheduler.yaml").unlink()
        self.assertFails(kubernetes, "base/kustomization.yaml: resource scheduler.yaml does not exist", "no Deployment loom-scheduler")

    def test_kustomization_names_a_missing_config_file(self):
        (self.repo / dc.K8S_LOOM_TOML).unlink()
        self.assertFails(kubernetes, "file of loom-config config/loom.toml does not exist")

    def test_generator_file_outside_the_kustomization(self):
        self.edit(f"{dc.BASE_DIR}/kustomization.yaml", "- nats/auth.conf", "- ../../nats/auth.conf")
        self.assertFails(kubernetes, "is outside the kustomization's directory")

    def test_manifest_named_by_no_kustomization(self):
        shutil.copy(self.repo / dc.BASE_DIR / "klaxon.yaml", self.repo / dc.BASE_DIR / "klaxon-copy.yaml")
        self.assertFails(kubernetes, "base/klaxon-copy.yaml: no kustomization.yaml names it")

    def test_schema_violation(self):
        self.edit(f"{dc.BASE_DIR}/validator.yaml", "containerPort: 9810", "containerPort: http9810")
        self.assertFails(kubernetes, "containerPort: 'http9810' is not of type 'integer'")

    def test_unknown_field(self):
        self.edit(f"{dc.BASE_DIR}/scheduler.yaml", "  replicas: 2\n", "  replicas: 2\n  replica: 2\n")
        self.assertFails(kubernetes, "'replica' was unexpected")

    def test_no_readiness_probe(self):
        self.edit(f"{dc.BASE_DIR}/validator.yaml", "          readinessProbe:\n", "          startupProbe:\n")
        self.assertFails(kubernetes, "Deployment loom-validator: has no readinessProbe")

    def test_liveness_on_the_wrong_path(self):
        self.edit(f"{dc.BASE_DIR}/scheduler.yaml", "path: /healthz", "path: /metrics")
        self.assertFails(kubernetes, "livenessProbe asks '/metrics', not /healthz")

    def test_scheduler_replicas(self):
        self.edit(f"{dc.BASE_DIR}/scheduler.yaml", "  replicas: 2\n", "  replicas: 1\n")
        self.assertFails(kubernetes, "Deployment loom-scheduler: 1 replicas, not 2")

    def test_agent_grace_period_shorter_than_the_drain(self):
        self.edit(f"{dc.BASE_DIR}/agent.yaml", "terminationGracePeriodSeconds: 90", "terminationGracePeriodSeconds: 45")
        self.assertFails(kubernetes, "terminationGracePeriodSeconds 45 is shorter than agent.drain_timeout (30 s)")

    def test_longer_drain_timeout_needs_a_longer_grace_period(self):
        self.edit(dc.K8S_LOOM_TOML, 'drain_timeout = "30s"', 'drain_timeout = "2m"')
        self.assertFails(kubernetes, "terminationGracePeriodSeconds 90 is shorter than agent.drain_timeout (120 s)")

    def test_writable_root_file_system(self):
        self.edit(f"{dc.BASE_DIR}/klaxon.yaml", "readOnlyRootFilesystem: true", "readOnlyRootFilesystem: false")
        self.assertFails(kubernetes, "Deployment loom-klaxon: readOnlyRootFilesystem is not true")

    def test_no_run_as_non_root(self):
        self.edit(f"{dc.BASE_DIR}/klaxon.yaml", "        runAsNonRoot: true\n", "")
        self.assertFails(kubernetes, "Deployment loom-klaxon: runAsNonRoot is not set")

    def test_data_dir_not_mounted(self):
        self.edit(f"{dc.BASE_DIR}/agent.yaml", "mountPath: /var/lib/loom", "mountPath: /var/lib/other")
        self.assertFails(kubernetes, "/var/lib/loom is not a writable mount")

    def test_no_loom_config(self):
        self.edit(
            f"{dc.BASE_DIR}/validator.yaml",
            "            - name: LOOM_CONFIG\n              value: /etc/loom/loom.toml\n",
            "",
        )
        self.assertFails(kubernetes, "Deployment loom-validator: LOOM_CONFIG is not set")

    def test_loopback_listen(self):
        self.edit(dc.K8S_LOOM_TOML, 'listen = "0.0.0.0:9810"', 'listen = "127.0.0.1:9810"')
        self.assertFails(kubernetes, "is a loopback address")

    def test_wrong_nats_user(self):
        self.edit(f"{dc.BASE_DIR}/agent.yaml", "value: agent\n", "value: scheduler\n")
        self.assertFails(kubernetes, "LOOM_NATS__USER is 'scheduler', not the role's NATS user 'agent'")

    def test_secret_key_not_shown_in_the_example(self):
        self.edit(dc.K8S_SECRETS, "  agent-password: change-me-agent\n", "")
        self.assertFails(kubernetes, "reads Secret loom-nats key agent-password, which deploy/kubernetes/secrets.example.yaml does not show")

    def test_nats_password_variable_not_set(self):
        self.edit(
            f"{dc.BASE_DIR}/nats.yaml",
            "            - name: NATS_LOOM_OPERATOR_PASSWORD\n"
            "              valueFrom:\n"
            "                secretKeyRef:\n"
            "                  name: loom-nats\n"
            "                  key: operator-password\n",
            "",
        )
        self.assertFails(kubernetes, "reads $NATS_LOOM_OPERATOR_PASSWORD, which the container's env does not set")

    def test_nats_routes_do_not_match_the_replicas(self):
        self.edit(f"{dc.K8S_NATS_DIR}/nats-server.conf", "    nats://nats-2.nats-headless:6222\n", "")
        self.assertFails(kubernetes, "the cluster routes do not name the 3 servers")

    def test_nats_server_refuses_the_configuration(self):
        if dc.find_nats_server() is None:
            self.fail("no nats-server: run scripts/install-nats-server")
        self.edit(f"{dc.K8S_NATS_DIR}/nats-server.conf", "max_file_store: 8GB", "max_file_store: [8GB")
        problems = dc.check_kubernetes(self.repo, render=False, run_tools=True).problems
        self.assertTrue(any("`nats-server -t` refuses it" in p for p in problems), problems)

    def test_scaled_object_misses_a_worker(self):
        registry = self.repo / dc.EXAMPLE_REGISTRY
        registry.write_text(registry.read_text() + '\n[workers.new-worker]\ncommand = ["bin/new.sh"]\n')
        dc.write_derived(self.repo)
        self.assertFails(kubernetes, "no trigger for the run consumer(s) run-new-worker of registry workers")

    def test_scaled_object_on_another_stream(self):
        self.edit(f"{dc.KUBERNETES_DIR}/agent-scaledobject.yaml", "stream: LOOM_RUNS", "stream: LOOM_RESULTS")
        self.assertFails(kubernetes, "stream 'LOOM_RESULTS' is not the run stream LOOM_RUNS")

    def test_scaled_object_on_the_client_port(self):
        self.edit(f"{dc.KUBERNETES_DIR}/agent-scaledobject.yaml", "svc.cluster.local:8222", "svc.cluster.local:4222")
        self.assertFails(kubernetes, "is not a NATS Service on the monitoring port 8222")

    def test_two_autoscalers(self):
        self.edit(f"{dc.KUBERNETES_DIR}/kustomization.yaml", "  - agent-scaledobject.yaml\n", "  - agent-scaledobject.yaml\n  - hpa/agent-hpa.yaml\n")
        self.assertFails(kubernetes, "autoscalers ScaledObject, HorizontalPodAutoscaler; it must have ScaledObject")

    def test_service_monitor_misses_a_role(self):
        self.edit(f"{dc.BASE_DIR}/servicemonitor.yaml", "values: [scheduler, validator, klaxon, agent]", "values: [scheduler, validator]")
        self.assertFails(kubernetes, "does not select the Service(s) loom-agent, loom-klaxon")

    def test_custom_resource_without_a_check(self):
        path = self.repo / dc.BASE_DIR / "servicemonitor.yaml"
        path.write_text(path.read_text() + "---\napiVersion: example.com/v1\nkind: Widget\nmetadata:\n  name: w\n")
        self.assertFails(kubernetes, "no schema and no check for example.com/v1 Widget")


class Nomad(BrokenCopy):
    def test_agents_without_kill_timeout(self):
        self.edit(dc.NOMAD_JOB, '      kill_timeout = "90s"\n', "")
        self.assertFails(dc.check_nomad, "group agents: task loom: has no kill_timeout")

    def test_agents_kill_timeout_shorter_than_the_drain(self):
        self.edit(dc.NOMAD_JOB, 'kill_timeout = "90s"', 'kill_timeout = "40s"')
        self.assertFails(dc.check_nomad, "kill_timeout 40s is shorter than agent.drain_timeout (30 s)")

    def test_longer_drain_timeout_needs_a_longer_kill_timeout(self):
        self.edit("deploy/nomad/loom.toml", 'drain_timeout = "30s"', 'drain_timeout = "2m"')
        self.assertFails(dc.check_nomad, "kill_timeout 90s is shorter than agent.drain_timeout (120 s)")

    def test_loom_toml_missing(self):
        (self.repo / "deploy/nomad/loom.toml").unlink()
        self.assertFails(dc.check_nomad, "the loom.toml template reads loom.toml, which does not exist beside the job")

    def test_validator_count(self):
        self.edit(dc.NOMAD_JOB, 'group "validator" {\n    count = 2', 'group "validator" {\n    count = 1')
        self.assertFails(dc.check_nomad, "group validator: count 1, not 2")

    def test_missing_group(self):
        self.edit(dc.NOMAD_JOB, 'group "klaxon" {', 'group "alerts" {')
        self.assertFails(dc.check_nomad, "groups agents, alerts, scheduler, validator, not agents, klaxon, scheduler, validator")

    def test_no_readyz_check(self):
        self.edit(dc.NOMAD_JOB, 'path     = "/readyz"', 'path     = "/ready"', count=-1)
        self.assertFails(dc.check_nomad, "group scheduler: no http check on /readyz", "group agents: no http check on /readyz")

    def test_no_registry_template(self):
        self.edit(dc.NOMAD_JOB, 'destination   = "local/workers.toml"', 'destination   = "local/registry.toml"', count=-1)
        self.assertFails(dc.check_nomad, "no template renders the registry (local/workers.toml)")

    def test_registry_file_missing(self):
        (self.repo / dc.NOMAD_REGISTRY).unlink()
        self.assertFails(dc.check_nomad, "the registry template reads workers.toml, which does not exist beside the job")

    def test_password_not_from_a_variable(self):
        self.edit(dc.NOMAD_JOB, "{{ with nomadVar \"nomad/jobs/loom\" }}LOOM_NATS__PASSWORD='{{ .agent_password }}'{{ end }}", "LOOM_NATS__PASSWORD=secret")
        self.assertFails(dc.check_nomad, "group agents: task loom: LOOM_NATS__PASSWORD does not come from a template")

    def test_wrong_role(self):
        self.edit(dc.NOMAD_JOB, 'args  = ["klaxon"]', 'args  = ["validator"]')
        self.assertFails(dc.check_nomad, "group klaxon: task loom: runs `loom validator`, not `loom klaxon`")

    def test_not_hcl(self):
        self.edit(dc.NOMAD_JOB, 'job "loom" {', 'job "loom" {{')
        self.assertFails(dc.check_nomad, "is not valid HCL")


class Derived(BrokenCopy):
    def test_prometheus_rule_drifts_from_the_rules(self):
        self.edit(dc.RULES, "for: 1m", "for: 5m")
        self.assertFails(dc.check_derived, "spec.groups differ from the groups of deploy/prometheus/loom-rules.yml (changed loom/LoomNoSchedulerLeader)")

    def test_prometheus_rule_loses_a_rule(self):
        path = self.repo / dc.RULES
        text = path.read_text()
        path.write_text(text[: text.index("      # A Klaxon sink did not take")])
        self.assertFails(dc.check_derived, "extra loom/LoomKlaxonDeliveryFailing")

    def test_registry_copy_drifts(self):
        self.edit(dc.K8S_REGISTRY, 'timeout = "5m"', 'timeout = "6m"')
        self.assertFails(dc.check_derived, "deploy/kubernetes/base/config/workers.toml differs from examples/value-first/workers.toml")

    def test_nats_users_drift(self):
        self.edit(dc.NATS_AUTH, "users = [", "users = [\n    { user: extra, password: x }")
        self.assertFails(dc.check_derived, "deploy/kubernetes/base/nats/auth.conf differs from deploy/nats/auth.conf")

    def test_write_repairs_every_drift(self):
        self.edit(dc.RULES, "for: 1m", "for: 5m")
        self.edit(dc.K8S_REGISTRY, 'timeout = "5m"', 'timeout = "6m"')
        self.assertNotEqual(dc.check_derived(self.repo).problems, [])
        dc.write_derived(self.repo)
        self.assertEqual(dc.check_derived(self.repo).problems, [])


class Durations(unittest.TestCase):
    def test_loom_and_nomad_durations(self):
        self.assertEqual(dc.parse_duration("30s"), 30)
        self.assertEqual(dc.parse_duration("1m30s"), 90)
        self.assertEqual(dc.parse_duration("2h"), 7200)
        self.assertEqual(dc.parse_duration(45), 45)
        self.assertEqual(dc.parse_duration("45"), 45)
        with self.assertRaises(ValueError):
            dc.parse_duration("soon")


if __name__ == "__main__":
    unittest.main()
