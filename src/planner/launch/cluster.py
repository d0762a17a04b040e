"""Cluster job files around a launch folder's per-node scripts: a Slurm batch script and a Kubeflow PyTorchJob.

Every per-node script of the folder (launch_torchrun.sh, launch_trainer.sh, launch_megatron.sh,
launch_torchtitan.sh, launch_accelerate_*.sh) starts its engine's own rendezvous from NODE_RANK, MASTER_ADDR,
MASTER_PORT and JOB_ID. The cluster files only supply those per node and run the script once per node:
- Slurm: one task per node (`srun --ntasks-per-node=1`), NODE_RANK = SLURM_NODEID, MASTER_ADDR = the first host
  of the allocation (sbatch and srun documentation, slurm.schedmd.com).
- Kubernetes: the Kubeflow training operator's PyTorchJob (kubeflow.org/v1) with one Master and nodes-1 Worker
  pods; the operator sets MASTER_ADDR, MASTER_PORT and RANK (the pod's index, 0 on the master) in every pod.
launch_deepspeed.sh is not wrapped: the DeepSpeed launcher starts the nodes itself over ssh from a hostfile.
"""

import json

import yaml

from planner.launch.layout import DEFAULT_MASTER_PORT, node_layout
from planner.plan import Plan

PER_NODE_SCRIPTS = (
    "launch_torchrun.sh",
    "launch_megatron.sh",
    "launch_torchtitan.sh",
    "launch_trainer.sh",
    "launch_accelerate_fsdp.sh",
    "launch_accelerate_deepspeed.sh",
)
"""Scripts a cluster job can run once per node, in the order the default is picked (the plan's own engine's
script comes first when written: see default_script)."""
_ENGINE_SCRIPT = {
    "fsdp": "launch_torchrun.sh",
    "megatron": "launch_megatron.sh",
    "deepspeed": "launch_accelerate_deepspeed.sh",
}
_REQUIRED_ENV = {
    "launch_megatron.sh": [{"name": "MEGATRON_LM", "value": "REPLACE-WITH-THE-MEGATRON-LM-CHECKOUT-IN-THE-IMAGE"}],
    "launch_trainer.sh": [{"name": "TRAIN_SCRIPT", "value": "REPLACE-WITH-YOUR-TRAINER-SCRIPT"}],
    "launch_accelerate_fsdp.sh": [{"name": "TRAIN_SCRIPT", "value": "REPLACE-WITH-YOUR-ACCELERATE-SCRIPT"}],
    "launch_accelerate_deepspeed.sh": [{"name": "TRAIN_SCRIPT", "value": "REPLACE-WITH-YOUR-ACCELERATE-SCRIPT"}],
}
"""Variables a per-node script refuses to start without (launch_torchrun.sh defaults to train.py beside it)."""
CONFIGMAP = "planner-launch"
MOUNT = "/planner-launch"


def default_script(plan: Plan, files: dict[str, str]) -> str | None:
    """The per-node script the cluster files run by default: the plan's engine's, else the first written."""
    written = [name for name in PER_NODE_SCRIPTS if name in files]
    preferred = _ENGINE_SCRIPT.get(plan.engine)
    if preferred in written:
        return preferred
    return written[0] if written else None


def job_name(plan: Plan, model_name: str) -> str:
    """A DNS-1123 name (Kubernetes) that is also a readable Slurm job name."""
    text = f"planner-{model_name}-{plan.gpus}gpu".lower()
    return "".join(c if c.isalnum() or c == "-" else "-" for c in text)[:50].strip("-")


def slurm_script(plan: Plan, name: str, script: str, choices: list[str]) -> str:
    """sbatch file: the plan's nodes, one task per node, all its GPUs per node; srun runs `script` on each."""
    layout = node_layout(plan)
    lines = [
        "#!/usr/bin/env bash",
        f"#SBATCH --job-name={name}",
        f"#SBATCH --nodes={layout.nodes}",
        "#SBATCH --ntasks-per-node=1",
        f"#SBATCH --gpus-per-node={layout.procs_per_node}",
        "#SBATCH --exclusive",
        "#SBATCH --output=%x-%j.out",
        "# Written by planner launch. Submit from this folder: sbatch slurm.sbatch",
        "# One task per node: each runs the per-node launch script, whose launcher (torchrun or accelerate)",
        f"# starts the {layout.procs_per_node} GPU processes of that node and joins the rendezvous on the first node.",
        f"# LAUNCH picks the script (default {script}; also: {', '.join(c for c in choices if c != script) or '-'}).",
        "# Add your site's --partition/--account/--time lines above; exported variables (TRAIN_SCRIPT, ...) reach",
        "# every node.",
        "set -euo pipefail",
        'HERE="${SLURM_SUBMIT_DIR:-$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)}"',
        f'LAUNCH="${{LAUNCH:-{script}}}"',
        'MASTER_ADDR="$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)"',
        f'export MASTER_ADDR MASTER_PORT="${{MASTER_PORT:-{DEFAULT_MASTER_PORT}}}" JOB_ID="$SLURM_JOB_ID"',
        f"srun --nodes={layout.nodes} --ntasks-per-node=1 --kill-on-bad-exit=1 \\",
        '  bash -c \'NODE_RANK="$SLURM_NODEID" exec bash "$0" "$@"\' "$HERE/$LAUNCH" "$@"',
    ]
    return "\n".join(lines) + "\n"


def pytorchjob_manifest(plan: Plan, name: str, script: str) -> dict:
    """A kubeflow.org/v1 PyTorchJob: Master + (nodes - 1) Workers, each pod holding one node's GPUs and running
    `script` from the launch folder mounted from the ConfigMap `planner-launch`."""
    layout = node_layout(plan)
    container = {
        "name": "pytorch",  # the training operator finds the training container by this name
        "image": "REPLACE-WITH-YOUR-TRAINING-IMAGE",
        "command": ["bash", "-c", f'NODE_RANK="$RANK" JOB_ID="{name}" exec bash {MOUNT}/"$LAUNCH"'],
        "env": [{"name": "LAUNCH", "value": script}, *_REQUIRED_ENV.get(script, [])],
        "resources": {"limits": {"nvidia.com/gpu": str(layout.procs_per_node)}},  # a Quantity: a string
        "volumeMounts": [{"name": "launch", "mountPath": MOUNT}, {"name": "dshm", "mountPath": "/dev/shm"}],
    }
    template = {
        "spec": {
            "containers": [container],
            "volumes": [
                {"name": "launch", "configMap": {"name": CONFIGMAP}},
                {"name": "dshm", "emptyDir": {"medium": "Memory"}},  # NCCL and dataloaders need more than 64 MB
            ],
        }
    }
    replicas = {"Master": {"replicas": 1, "restartPolicy": "OnFailure", "template": template}}
    if layout.nodes > 1:
        replicas["Worker"] = {"replicas": layout.nodes - 1, "restartPolicy": "OnFailure", "template": template}
    return {
        "apiVersion": "kubeflow.org/v1",
        "kind": "PyTorchJob",
        "metadata": {"name": name},
        "spec": {"runPolicy": {"cleanPodPolicy": "None"}, "pytorchReplicaSpecs": replicas},
    }


def render_manifest(manifest: dict, script: str) -> str:
    header = [
        "# Kubeflow training operator PyTorchJob, written by planner launch.",
        "# 1. kubectl create configmap planner-launch --from-file=.   (this folder: the scripts and configs)",
        "# 2. set the image (engines installed) and any REPLACE-... value; 3. kubectl apply -f pytorchjob.yaml",
        f"# Each pod runs {script} (env LAUNCH) with NODE_RANK = the RANK the operator sets (0 on the Master).",
    ]
    body = yaml.safe_dump(json.loads(json.dumps(manifest)), sort_keys=False, default_flow_style=False)
    return "\n".join(header) + "\n" + body


def cluster_files(plan: Plan, model_name: str, files: dict[str, str]) -> dict[str, str]:
    """slurm.sbatch and pytorchjob.yaml for a launch folder's files (none when no per-node script is written)."""
    script = default_script(plan, files)
    if script is None:
        return {}
    name = job_name(plan, model_name)
    choices = [n for n in PER_NODE_SCRIPTS if n in files]
    return {
        "slurm.sbatch": slurm_script(plan, name, script, choices),
        "pytorchjob.yaml": render_manifest(pytorchjob_manifest(plan, name, script), script),
    }
