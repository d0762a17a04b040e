"""Cluster job files of a launch folder: the Slurm script's #SBATCH directives and syntax (bash -n), and the
PyTorchJob manifest deserialised by the Kubeflow training SDK's own models (kubeflow-training, dev extra)."""

import shutil
import subprocess

import pytest
import yaml

import planner
from planner.launch.cluster import PER_NODE_SCRIPTS


@pytest.fixture(scope="module")
def folder():
    solution = planner.solve("13b", "16xA100")
    fsdp = next(rank for rank, e in enumerate(solution.plans, 1) if e.plan.engine == "fsdp")
    return solution.launch_files(fsdp, "all")  # the best FSDP plan (rank 12): 2 nodes of 8, launched by torchrun


def _directives(script: str) -> dict[str, str]:
    found = {}
    for line in script.splitlines():
        if line.startswith("#SBATCH "):
            key, _, value = line.removeprefix("#SBATCH ").partition("=")
            found[key] = value
    return found


def test_slurm_script_asks_for_the_plans_nodes_and_gpus(folder):
    script = folder.files["slurm.sbatch"]
    plan = folder.chosen.plan
    assert _directives(script) == {
        "--job-name": "planner-llama-2-13b-16gpu",
        "--nodes": str(plan.nodes),
        "--ntasks-per-node": "1",
        "--gpus-per-node": str(plan.gpus // plan.nodes),
        "--exclusive": "",
        "--output": "%x-%j.out",
    }
    assert plan.nodes == 2 and 'LAUNCH="${LAUNCH:-launch_torchrun.sh}"' in script  # the fsdp plan's script
    assert f"srun --nodes={plan.nodes} --ntasks-per-node=1" in script
    for name in PER_NODE_SCRIPTS:
        assert name in folder.files  # every script the job may pick is in the folder


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_slurm_script_is_valid_bash(folder, tmp_path):
    path = tmp_path / "slurm.sbatch"
    path.write_text(folder.files["slurm.sbatch"])
    result = subprocess.run(["bash", "-n", str(path)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_pytorchjob_is_a_valid_kubeflow_pytorchjob(folder):
    sdk = pytest.importorskip("kubeflow.training", reason="kubeflow-training (dev extra) holds the models")
    from kubeflow.training.api_client import ApiClient

    manifest = yaml.safe_load(folder.files["pytorchjob.yaml"])
    job = ApiClient()._ApiClient__deserialize(manifest, "KubeflowOrgV1PyTorchJob")
    assert isinstance(job, sdk.models.KubeflowOrgV1PyTorchJob)
    specs = job.spec.pytorch_replica_specs
    assert sorted(specs) == ["Master", "Worker"]
    assert specs["Master"].replicas == 1 and specs["Worker"].replicas == folder.chosen.plan.nodes - 1
    container = specs["Worker"].template.spec.containers[0]
    assert container.name == "pytorch"
    assert container.resources.limits == {"nvidia.com/gpu": "8"}
    assert {e.name: e.value for e in container.env} == {"LAUNCH": "launch_torchrun.sh"}
    # the SDK's models accept unknown keys silently: every key written must be one the models know
    assert ApiClient().sanitize_for_serialization(job) == manifest


def test_one_node_plan_has_no_workers():
    folder = planner.solve("7b", "8xA100").launch_files(1, "torchrun")
    manifest = yaml.safe_load(folder.files["pytorchjob.yaml"])
    assert list(manifest["spec"]["pytorchReplicaSpecs"]) == ["Master"]
    assert _directives(folder.files["slurm.sbatch"])["--nodes"] == "1"


def test_deepspeed_launcher_only_folder_has_no_cluster_files():
    folder = planner.solve("7b", "8xA100").launch_files(1, "deepspeed")
    assert "slurm.sbatch" not in folder.files and "pytorchjob.yaml" not in folder.files
