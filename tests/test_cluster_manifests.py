"""The cluster/ manifests and the README parse, and every command they run is a valid invocation.

Each `python -m llm_ray.sweep|train ...` found in them (the RayJob's entrypoint, the commands in the
manifests' comments, the code blocks of README.md) is composed with Hydra's compose API against
conf/, validated, and for sweeps planned (dry run): a renamed config key or an impossible plan breaks
a test here, not a cluster job. Static and fast: no Ray cluster, no network.
"""

from __future__ import annotations

import glob
import os
import re
import shlex

import pytest
import yaml

from conftest import CONF

ROOT = os.path.dirname(CONF)
CLUSTER = os.path.join(ROOT, "cluster")
DOCS = [os.path.join(ROOT, "README.md")] + sorted(glob.glob(os.path.join(ROOT, "docs", "*.md")))
"""The README and the pages of docs/: their code blocks, docs/cluster.md included."""
RAY_VERSION = "2.60.0"
IMAGE = "ghcr.io/your-org/llm-ray:0.1.0"
INVOCATION = re.compile(r"python -m (llm_ray\.(?:sweep|train))\b(.*)")
SHELL_STOP = ("|", "||", "&&", ";", "&")
SECRET_NAME = re.compile(r"(SECRET|PASSWORD|API_KEY|ACCESS_KEY|(^|_)TOKEN$)", re.I)


def load_docs(name: str) -> list[dict]:
    with open(os.path.join(CLUSTER, name)) as f:
        return [d for d in yaml.safe_load_all(f) if d]


def by_kind(docs: list[dict], kind: str) -> dict:
    (doc,) = [d for d in docs if d.get("kind") == kind]
    return doc


def logical_lines(text: str, comments_only: bool) -> list[str]:
    """Lines with `#` comment markers stripped and backslash continuations joined."""
    out, buf = [], ""
    for raw in text.splitlines():
        line = raw.strip()
        if comments_only:
            if not line.startswith("#"):
                buf = ""
                continue
            line = line.lstrip("#").strip()
        if line.endswith("\\"):
            buf += line[:-1] + " "
            continue
        out.append(buf + line)
        buf = ""
    return out


def md_code_blocks(text: str) -> str:
    return "\n".join(re.findall(r"```[a-z]*\n(.*?)```", text, flags=re.S))


def invocations(line: str) -> list[tuple[str, list[str]]]:
    """(module, Hydra overrides) of each llm-ray command on a shell line."""
    found = []
    for m in INVOCATION.finditer(os.path.expandvars(line)):
        words = []
        for w in shlex.split(m.group(2), comments=True):
            if w in SHELL_STOP or w.startswith((">", "2>")):
                break
            words.append(w)
        found.append((m.group(1), words))
    return found


def commands() -> list[tuple[str, str, str, list[str]]]:
    """(where, shell line, module, overrides) for every llm-ray invocation in cluster/ and the docs."""
    out = []
    for name in sorted(os.listdir(CLUSTER)):
        path = os.path.join(CLUSTER, name)
        with open(path) as f:
            text = f.read()
        for line in logical_lines(text, comments_only=True):
            out += [(f"cluster/{name} (comment)", line, mod, ov) for mod, ov in invocations(line)]
        if name.endswith(".yaml"):
            for doc in yaml.safe_load_all(text):
                if doc and doc.get("kind") == "RayJob":
                    line = doc["spec"]["entrypoint"]
                    out += [(f"cluster/{name} (RayJob entrypoint)", line, mod, ov)
                            for mod, ov in invocations(line)]
    for doc in DOCS:
        with open(doc) as f:
            for line in logical_lines(md_code_blocks(f.read()), comments_only=False):
                out += [(os.path.relpath(doc, ROOT), line, mod, ov) for mod, ov in invocations(line)]
    return out


COMMANDS = commands()


def compose(module: str, overrides: list[str]):
    from llm_ray.cli import compose as compose_config

    return compose_config("sweep" if module == "llm_ray.sweep" else "train", overrides)


def assert_mergeable_with_init_ray(job_env: dict) -> None:
    """Inside a job, Ray merges the driver's ray.init(runtime_env=...) (llm_ray.training.launch.init_ray:
    RAY_ENV's env_vars) into the job's runtime_env and refuses a key set by both."""
    from llm_ray.training.launch import RAY_ENV

    clash = set(job_env.get("env_vars", {})) & set(RAY_ENV)
    assert not clash, f"{sorted(clash)}: set these in the pods' environment, not the job's runtime_env"


def test_manifests_and_docs_hold_the_commands_this_file_checks():
    where = {w.split(" ")[0] for w, *_ in COMMANDS}
    assert {"cluster/rayjob.yaml", "cluster/cluster-launcher-aws.yaml", "cluster/runtime_env.yaml",
            "README.md", "docs/cluster.md"} <= where, where
    assert any("ray job submit" in line for _, line, _, _ in COMMANDS)


@pytest.mark.parametrize("where,line,module,overrides", COMMANDS,
                         ids=[f"{w}:{' '.join(o)[:60]}" for w, _, _, o in COMMANDS])
def test_every_command_composes_validates_and_plans(where, line, module, overrides, monkeypatch):
    """The command's overrides compose against conf/ (typos and renamed keys fail), the typed
    config validates, and a sweep's plan has cells (dry run: nothing is trained or written)."""
    from omegaconf import OmegaConf

    from llm_ray.core.config import validate_train_job
    from llm_ray.cli import job_from_hydra

    cfg = compose(module, overrides)
    job = job_from_hydra(cfg)
    validate_train_job(job, cpus_available=64)
    if module == "llm_ray.sweep":
        import dataclasses

        from llm_ray.sweep import run_sweep

        sweep = dataclasses.replace(OmegaConf.to_object(cfg.sweep), dry_run=True)
        summary = run_sweep(job, sweep, OmegaConf.to_object(cfg.fit), log=lambda *a, **k: None)
        assert summary["plan"].cells, f"{where}: the sweep plans no cell"

    submitted = "ray job submit" in line or "RayJob" in where
    if submitted or where.startswith("cluster/"):
        # Inside a Ray job the driver joins the job's cluster through the RAY_ADDRESS Ray sets (Ray's
        # convention): the command must not force a local cluster or name another one.
        assert job.resources.address in (None, "auto"), f"{where}: drop resources.address={job.resources.address}"
        monkeypatch.setenv("RAY_ADDRESS", "10.0.0.1:6379")
        assert job.resources.cluster_address() is not None
    if where.startswith("cluster/"):
        # A multi-node cluster needs one storage every node reaches, never a node-local path.
        store = cfg.sweep.storage_path if module == "llm_ray.sweep" and cfg.sweep.storage_path \
            else job.trainer.storage_path
        assert store and store.startswith(("s3://", "gs://")), f"{where}: storage is {store!r}"
        assert job.resources.use_gpu or "sweep=smoke" in overrides, where


def test_a_renamed_config_key_fails_to_compose():
    with pytest.raises(Exception, match="not in struct|Could not override|Key"):
        compose("llm_ray.sweep", ["trainer.storage_pth=s3://bucket/x"])


def test_raycluster_has_a_cpu_head_and_a_gpu_worker_group_on_the_package_image():
    docs = load_docs("raycluster.yaml")
    rc = by_kind(docs, "RayCluster")
    assert rc["apiVersion"] == "ray.io/v1"
    spec = rc["spec"]
    assert spec["rayVersion"] == RAY_VERSION
    head = spec["headGroupSpec"]
    (group,) = spec["workerGroupSpecs"]
    assert group["minReplicas"] <= group["replicas"] <= group["maxReplicas"]
    pods = [head["template"]["spec"], group["template"]["spec"]]
    for pod in pods:
        (c,) = pod["containers"]
        assert c["image"] == IMAGE
        assert c["resources"]["requests"] == c["resources"]["limits"]
        mounts = {m["name"]: m["mountPath"] for m in c["volumeMounts"]}
        assert {v["name"] for v in pod["volumes"]} == set(mounts)
        env = {e["name"]: e.get("value") for e in c["env"]}
        assert mounts["token-cache"] == env["LLM_RAY_TOKEN_CACHE"]
        # Every emptyDir bounded: a runaway cache evicts the pod, never fills the node's disk.
        assert all(v["emptyDir"].get("sizeLimit") for v in pod["volumes"] if "emptyDir" in v), pod["volumes"]
        # Auth is never switched off per container.
        assert env.get("RAY_AUTH_MODE", "token") == "token"
        # Credentials only by reference (Secret), never as literal values.
        assert not [n for n in env if SECRET_NAME.search(n)], env
        assert {"name": "llm-ray-aws", "optional": True} in [e.get("secretRef") for e in c["envFrom"]]
    (worker,) = group["template"]["spec"]["containers"]
    gpus = int(worker["resources"]["limits"]["nvidia.com/gpu"])
    assert gpus >= 1
    # conf/resources/gpu.yaml: every rank takes one GPU and cpus_per_worker CPUs.
    gpu_res = compose("llm_ray.train", ["resources=gpu", "deepspeed=gpu_bf16"]).resources
    assert float(worker["resources"]["limits"]["cpu"]) >= gpus * gpu_res.cpus_per_worker
    cm = by_kind(docs, "ConfigMap")
    assert not [k for k in cm["data"] if SECRET_NAME.search(k)]


def test_raycluster_runs_with_ray_token_auth_and_no_service_outside_the_cluster():
    """KubeRay's authOptions (token mode): the operator generates the token Secret and sets
    RAY_AUTH_MODE=token + RAY_AUTH_TOKEN on every Ray container. The head's Service keeps KubeRay's
    default ClusterIP (no LoadBalancer, NodePort or Ingress anywhere in cluster/)."""
    docs = load_docs("raycluster.yaml")
    spec = by_kind(docs, "RayCluster")["spec"]
    assert spec["authOptions"] == {"mode": "token"}
    assert "serviceType" not in spec["headGroupSpec"] and "headService" not in spec["headGroupSpec"]
    for name in os.listdir(CLUSTER):
        if name.endswith(".yaml"):
            text = open(os.path.join(CLUSTER, name)).read()
            assert not re.search(r"LoadBalancer|NodePort|kind:\s*Ingress", text), name
            assert not re.search(r"RAY_AUTH_MODE\W+disabled", text, re.I), name


def test_network_policy_admits_ray_ports_only_from_the_clusters_own_pods():
    """Ingress to the Ray pods (GCS 6379, dashboard/job API 8265, client 10001, and every port
    between nodes) only from pods of this RayCluster; 8265 also from the RayJob's submitter pod and
    the KubeRay operator. No rule admits an arbitrary source (ipBlock, empty `from`)."""
    docs = load_docs("raycluster.yaml")
    name = by_kind(docs, "RayCluster")["metadata"]["name"]
    job_name = by_kind(load_docs("rayjob.yaml"), "RayJob")["metadata"]["name"]
    policy = by_kind(docs, "NetworkPolicy")
    spec = policy["spec"]
    assert spec["podSelector"] == {"matchLabels": {"ray.io/cluster": name}}
    assert spec["policyTypes"] == ["Ingress"]
    own, outside = spec["ingress"]
    assert own == {"from": [{"podSelector": {"matchLabels": {"ray.io/cluster": name}}}]}
    assert outside["ports"] == [{"port": 8265, "protocol": "TCP"}]
    sources = [peer["podSelector"]["matchLabels"] for peer in outside["from"]]
    assert sources == [{"batch.kubernetes.io/job-name": job_name},
                       {"app.kubernetes.io/name": "kuberay-operator"}]
    for rule in spec["ingress"]:
        assert rule.get("from"), "a rule without `from` admits every source"
        assert not [p for p in rule["from"] if "ipBlock" in p]


def test_rayjob_has_a_deadline():
    job = by_kind(load_docs("rayjob.yaml"), "RayJob")
    assert 0 < job["spec"]["activeDeadlineSeconds"] <= 7 * 24 * 3600


def test_cluster_launcher_turns_token_auth_on_and_ships_the_token_to_every_node():
    from ray.autoscaler._private.util import prepare_config

    config = prepare_config(load_docs("cluster-launcher-aws.yaml")[0])
    assert "--env RAY_AUTH_MODE=token" in config["docker"]["run_options"]
    assert config["file_mounts"]["~/.ray/auth_token"] == "~/.ray/auth_token"
    for key in ("head_start_ray_commands", "worker_start_ray_commands"):
        (start,) = [c for c in config[key] if "ray start" in c]
        assert "export RAY_AUTH_MODE=token" in start and "test -s ~/.ray/auth_token &&" in start, start
    (head_start,) = [c for c in config["head_start_ray_commands"] if "ray start" in c]
    assert "--dashboard-host=127.0.0.1" in head_start  # reached through `ray dashboard` (SSH) only
    text = open(os.path.join(CLUSTER, "cluster-launcher-aws.yaml")).read()
    assert "ray get-auth-token --generate" in text and "RAY_AUTH_MODE=token ray job submit" in text


def test_cluster_launcher_sets_least_privilege_profiles_and_its_own_security_group():
    """Both node types name an instance profile (so Ray never creates its default one, EC2 and S3
    full access) and a security group (so Ray creates none, whose rules open SSH to 0.0.0.0/0). The
    workers' policy reaches one bucket only; the head's adds EC2 for the autoscaler and nothing
    of S3 or IAM beyond passing the workers' role."""
    import json

    config = load_docs("cluster-launcher-aws.yaml")[0]
    for node in config["available_node_types"].values():
        assert node["node_config"]["IamInstanceProfile"]["Arn"].split("/")[-1] in ("llm-ray-s3", "llm-ray-head")
        assert node["node_config"]["SecurityGroupIds"]
    assert "security_group" not in config["provider"]
    s3 = json.load(open(os.path.join(CLUSTER, "iam-policy-s3.json")))
    for st in s3["Statement"]:
        assert st["Effect"] == "Allow" and "*" not in json.dumps(st["Action"])
        resources = st["Resource"] if isinstance(st["Resource"], list) else [st["Resource"]]
        assert all(r in ("arn:aws:s3:::my-bucket", "arn:aws:s3:::my-bucket/*") for r in resources), st
    head = json.load(open(os.path.join(CLUSTER, "iam-policy-head.json")))
    actions = [a for st in head["Statement"] for a in ([st["Action"]] if isinstance(st["Action"], str) else st["Action"])]
    assert all(a.startswith("ec2:") or a == "iam:PassRole" for a in actions), actions
    assert not [a for a in actions if a.endswith(":*")]
    (passrole,) = [st for st in head["Statement"] if st["Action"] == "iam:PassRole"]
    assert passrole["Resource"].endswith(":role/llm-ray-s3")
    text = open(os.path.join(CLUSTER, "cluster-launcher-aws.yaml")).read()
    assert "0.0.0.0/0" not in text.split("available_node_types")[1]


def test_rayjob_targets_the_raycluster_and_carries_no_secret():
    cluster_name = by_kind(load_docs("raycluster.yaml"), "RayCluster")["metadata"]["name"]
    job = by_kind(load_docs("rayjob.yaml"), "RayJob")
    assert job["apiVersion"] == "ray.io/v1"
    assert job["spec"]["clusterSelector"] == {"ray.io/cluster": cluster_name}
    env = yaml.safe_load(job["spec"]["runtimeEnvYAML"])
    from ray.runtime_env import RuntimeEnv

    RuntimeEnv(**env)
    assert not [k for k in env.get("env_vars", {}) if SECRET_NAME.search(k)]
    assert_mergeable_with_init_ray(env)
    assert shlex.split(job["spec"]["entrypoint"])[:3] == ["python", "-m", "llm_ray.sweep"]


def test_cluster_launcher_config_passes_rays_own_schema_and_installs_like_the_readme():
    from ray.autoscaler._private.util import prepare_config, validate_config

    raw = load_docs("cluster-launcher-aws.yaml")[0]
    config = prepare_config(raw)  # what `ray up` does before validating
    validate_config(config)
    assert config["docker"]["image"] == f"rayproject/ray:{RAY_VERSION}-py311-gpu"
    nodes = config["available_node_types"]
    head = nodes[config["head_node_type"]]
    assert head["resources"].get("CPU") == 0 and not head["resources"].get("GPU")
    assert any(n["resources"].get("GPU", 0) >= 1 for n in nodes.values())
    (remote,) = [k for k, v in config["file_mounts"].items() if v == "."]
    assert ".venv" in config["rsync_exclude"]
    setup = config["setup_commands"]
    # The README's install: torch pinned first, then the package editable (conf/ sits beside it).
    assert setup.index("pip install -q torch==2.13.0") < setup.index(f"pip install -q -e {remote}")
    assert any("python -m llm_ray.prebuild" in c for c in config["worker_setup_commands"])
    text = open(os.path.join(CLUSTER, "cluster-launcher-aws.yaml")).read()
    assert not re.search(r"aws_(secret_)?access_key|AKIA[0-9A-Z]{16}", text, re.I)


def test_runtime_env_is_valid_and_keeps_the_venv_and_runs_out_of_the_upload():
    from ray.runtime_env import RuntimeEnv

    (env,) = load_docs("runtime_env.yaml")
    RuntimeEnv(**env)
    assert env["working_dir"] == "."
    assert {".venv", ".git", "runs", "outputs"} <= set(env["excludes"])
    assert not [k for k in env.get("env_vars", {}) if SECRET_NAME.search(k)]
    assert_mergeable_with_init_ray(env)


def test_upload_excludes_keep_every_file_the_job_needs():
    """`excludes` (runtime_env), `rsync_exclude` (cluster launcher) and the .dockerignore match no
    file of the package or of conf/ (a `**/wandb` pattern once dropped conf/wandb/ and broke Hydra),
    matched the way Ray matches them (gitwildmatch)."""
    from ray._private.thirdparty.pathspec import PathSpec

    needed = [os.path.relpath(os.path.join(d, f), ROOT)
              for top in ("llm_ray", "conf") for d, _, files in os.walk(os.path.join(ROOT, top))
              for f in files if "__pycache__" not in d]
    assert "conf/wandb/default.yaml" in needed
    ignore = [ln for ln in open(os.path.join(CLUSTER, "Dockerfile.dockerignore")).read().splitlines()
              if ln.strip() and not ln.startswith("#")]
    for name, patterns in [("runtime_env.yaml", load_docs("runtime_env.yaml")[0]["excludes"]),
                           ("cluster-launcher-aws.yaml",
                            load_docs("cluster-launcher-aws.yaml")[0]["rsync_exclude"]),
                           ("Dockerfile.dockerignore", ignore)]:
        spec = PathSpec.from_lines("gitwildmatch", patterns)
        assert [f for f in needed if spec.match_file(f)] == [], name


def test_gitignore_keeps_every_file_the_job_needs():
    """`ray job submit --working-dir .` also skips what .gitignore matches (and git does not commit
    it): a bare `wandb/` pattern matches conf/wandb/ and the job then fails in Hydra with
    "Could not find 'wandb/default'"."""
    from ray._private.thirdparty.pathspec import PathSpec

    needed = [os.path.relpath(os.path.join(d, f), ROOT)
              for top in ("llm_ray", "conf") for d, _, files in os.walk(os.path.join(ROOT, top))
              for f in files if "__pycache__" not in d and not f.endswith(".pyc")]
    with open(os.path.join(ROOT, ".gitignore")) as f:
        spec = PathSpec.from_lines("gitwildmatch", f.read().splitlines())
    assert [f for f in needed if spec.match_file(f)] == []


def test_dockerfile_builds_on_the_ray_gpu_image_and_installs_the_package_editable():
    text = open(os.path.join(CLUSTER, "Dockerfile")).read()
    assert re.search(rf"^FROM rayproject/ray:{RAY_VERSION}-py311-gpu$", text, re.M)
    assert "pip install --no-cache-dir -e /home/ray/llm-ray" in text
    assert f"-t {IMAGE} ." in text
    ignore = open(os.path.join(CLUSTER, "Dockerfile.dockerignore")).read().split()
    assert {".venv", ".git", "runs"} <= set(ignore)
    assert not re.search(r"^(ENV|ARG)\b.*(SECRET|ACCESS_KEY|API_KEY)", text, re.M | re.I)


def test_no_hydra_config_names_a_credential():
    """Credentials come from the environment or the AWS config, never from conf/."""
    hits = []
    for dirpath, _, files in os.walk(CONF):
        for name in files:
            with open(os.path.join(dirpath, name)) as f:
                for i, line in enumerate(f, 1):
                    code = line.split("#", 1)[0]
                    if re.search(r"secret|access_key|password|api_key|\btoken\s*:", code, re.I):
                        hits.append(f"{name}:{i}: {line.strip()}")
    assert not hits, hits
