"""Pure builders for the job's children: worker pods, the headless Service, the checkpoint claim,
and the progress Lease with the Role and RoleBinding that let the job's ServiceAccount patch it.

Each returns a plain manifest dict; tests compare them by exact equality.
"""

from __future__ import annotations

import copy
from typing import Any

from ..api import API_VERSION, KIND, TRAINER_CONTAINER, DistributedTrainingJob, contract
from ..api.names import (
    DEFAULT_CLUSTER_DOMAIN,
    LABEL_ATTEMPT,
    LABEL_JOB_NAME,
    LABEL_MANAGED_BY,
    LABEL_QUEUE_NAME,
    LABEL_WORKER_INDEX,
    MANAGED_BY,
    claim_name,
    progress_lease_name,
    service_name,
    worker_fqdn,
    worker_name,
    workload_name,
)
from ..api.progress import rendezvous_annotation
from ..api.spec import Runtime
from ..engine.admission import Placement
from ..engine.env import LAUNCHER_BACKSTOP_SECONDS, worker_env
from ..engine.plan import Launch

CHECKPOINT_VOLUME = "trainyard-checkpoints"
RUN_VOLUME = "trainyard-run"
RUN_DIR = "/var/run/trainyard"
HEARTBEAT_FILE = f"{RUN_DIR}/heartbeat"
# The trainer image's group (trainer-image/Dockerfile: uid/gid 1000). A checkpoint volume is
# usually root-owned 0755 when first mounted; with this fsGroup the kubelet makes it group-owned
# and group-writable, so the trainer's uid can write its checkpoints.
TRAINER_IMAGE_GID = 1000
# The engine's hang detection fires at the deadline, the launcher's watchdog 30 s later (when the
# operator is down); the probe is the backstop for a launcher that is itself stuck, 30 s after that.
PROBE_SLACK_SECONDS = LAUNCHER_BACKSTOP_SECONDS + 30
RBAC_GROUP = "rbac.authorization.k8s.io"


def owner_reference(job: DistributedTrainingJob) -> dict[str, Any]:
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "name": job.metadata.name,
        "uid": job.metadata.uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }


def _labels(job: DistributedTrainingJob) -> dict[str, str]:
    return {LABEL_JOB_NAME: job.metadata.name, LABEL_MANAGED_BY: MANAGED_BY}


def heartbeat_probe(deadline: int, first: int | None = None) -> dict[str, Any]:
    """The heartbeat's age against the deadline, or the first-step budget while the file says
    ``starting`` (trainyard-launch writes it when it starts torchrun; a trainer when it starts)."""
    limit = deadline + PROBE_SLACK_SECONDS
    first_limit = (deadline if first is None else first) + PROBE_SLACK_SECONDS
    f = HEARTBEAT_FILE
    return {
        "exec": {"command": ["sh", "-c", f"a=$(( $(date +%s) - $(stat -c %Y {f}) )) && if grep -q starting {f}; "
                                         f"then test $a -lt {first_limit}; else test $a -lt {limit}; fi"]},
        "initialDelaySeconds": first_limit,
        "periodSeconds": 10,
        "failureThreshold": 1,
    }


def service_account_of(job: DistributedTrainingJob) -> str:
    spec = job.spec.template.get("spec") or {}
    return spec.get("serviceAccountName") or spec.get("serviceAccount") or "default"


def progress_lease(job: DistributedTrainingJob, rendezvous: tuple[int, str] | None = None) -> dict[str, Any]:
    """The Lease rank 0 renews with its progress (annotations; api.contract), worker 0's launcher
    notes its start in, and the operator publishes worker 0's pod IP in: `rendezvous` (attempt, IP)
    is made with it."""
    meta = _progress_metadata(job)
    if rendezvous is not None:
        meta["annotations"] = {contract.ANNOTATION_RENDEZVOUS: rendezvous_annotation(*rendezvous)}
    return {
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": meta,
        "spec": {},
    }


def _progress_metadata(job: DistributedTrainingJob) -> dict[str, Any]:
    """The Lease, its Role and its RoleBinding: one name, the job's labels, owned by the job."""
    meta = job.metadata
    return {"name": progress_lease_name(meta.name), "namespace": meta.namespace, "labels": _labels(job),
            "ownerReferences": [owner_reference(job)]}


def progress_role(job: DistributedTrainingJob) -> dict[str, Any]:
    """`get` and `patch` on the job's Lease, and nothing else: resourceNames names that one object."""
    meta = job.metadata
    name = progress_lease_name(meta.name)
    return {
        "apiVersion": f"{RBAC_GROUP}/v1",
        "kind": "Role",
        "metadata": _progress_metadata(job),
        "rules": [{"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "resourceNames": [name],
                   "verbs": ["get", "patch"]}],
    }


def progress_role_binding(job: DistributedTrainingJob) -> dict[str, Any]:
    """The Role, to the ServiceAccount the workers run as (the template's, else "default")."""
    meta = job.metadata
    name = progress_lease_name(meta.name)
    return {
        "apiVersion": f"{RBAC_GROUP}/v1",
        "kind": "RoleBinding",
        "metadata": _progress_metadata(job),
        "roleRef": {"apiGroup": RBAC_GROUP, "kind": "Role", "name": name},
        "subjects": [{"kind": "ServiceAccount", "name": service_account_of(job), "namespace": meta.namespace}],
    }


def _checkpoint_ownership(pod_spec: dict[str, Any]) -> None:
    """Give the checkpoint volume to the trainer's group: the pod's fsGroup, unless the template
    sets one. The group is the trainer container's runAsGroup, else the pod's, else the trainer
    image's. OnRootMismatch: the kubelet walks the volume only when its root is not that group's
    already (a large checkpoint directory is not re-chowned at every gang start). The user's own
    fsGroup and fsGroupChangePolicy are never overridden."""
    sc = pod_spec.setdefault("securityContext", {})
    if sc.get("fsGroup") is not None:
        return
    trainer = next((c for c in pod_spec["containers"] if c.get("name") == TRAINER_CONTAINER), {})
    gid = (trainer.get("securityContext") or {}).get("runAsGroup")
    if gid is None:
        gid = sc.get("runAsGroup")
    sc["fsGroup"] = TRAINER_IMAGE_GID if gid is None else gid
    sc.setdefault("fsGroupChangePolicy", "OnRootMismatch")


def _place(pod_spec: dict[str, Any], placement: Placement | None) -> None:
    """Where the queue admitted the gang: the flavours' node labels and tolerations (Kueue's
    podset.FromAssignment: the template's own selector keys stay, the flavour's are added)."""
    if placement is None:
        return
    if placement.node_selector:
        pod_spec["nodeSelector"] = {**(pod_spec.get("nodeSelector") or {}), **placement.node_selector}
    if placement.tolerations:
        tolerations = list(pod_spec.get("tolerations") or [])
        pod_spec["tolerations"] = tolerations + [t for t in placement.tolerations if t not in tolerations]


def worker_pod(job: DistributedTrainingJob, launch: Launch, placement: Placement | None = None,
               cluster_domain: str = DEFAULT_CLUSTER_DOMAIN) -> dict[str, Any]:
    meta, spec = job.metadata, job.spec
    template = copy.deepcopy(spec.template)
    tmeta = template.get("metadata") or {}
    pod_spec: dict[str, Any] = template["spec"]
    name = worker_name(meta.name, launch.attempt, launch.index)
    endpoint = worker_fqdn(meta.name, meta.namespace, launch.rendezvous_attempt, 0, cluster_domain)
    port = spec.rendezvous.port
    # Every worker of the gang, by index (a tensorflow job's TF_CONFIG); all of one attempt.
    peers = [f"{worker_fqdn(meta.name, meta.namespace, launch.rendezvous_attempt, i, cluster_domain)}:{port}"
             for i in range(spec.desired_workers)] if spec.runtime == Runtime.TENSORFLOW else None
    ckpt = spec.checkpoint

    deadline = spec.run_policy.progress_deadline_seconds
    for c in pod_spec["containers"]:
        if c.get("name") != TRAINER_CONTAINER:
            continue
        # Ours first, so the user's env can refer to them as $(PET_RDZV_ID) and the like.
        c["env"] = worker_env(job, launch, endpoint, port, ckpt.mount_path if ckpt else None,
                              HEARTBEAT_FILE if deadline else None, peers,
                              progress_lease=f"{meta.namespace}/{progress_lease_name(meta.name)}") + [
            {"name": contract.ENV_POD_IP, "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}}
        ] + (c.get("env") or [])
        mounts = list(c.get("volumeMounts") or [])
        if ckpt:
            mounts.append({"name": CHECKPOINT_VOLUME, "mountPath": ckpt.mount_path})
        if deadline:
            mounts.append({"name": RUN_VOLUME, "mountPath": RUN_DIR})
            c["livenessProbe"] = heartbeat_probe(deadline, spec.run_policy.first_progress_budget)
        if mounts:
            c["volumeMounts"] = mounts
    volumes = list(pod_spec.get("volumes") or [])
    if ckpt:
        claim = ckpt.claim_name or claim_name(meta.name)
        volumes.append({"name": CHECKPOINT_VOLUME, "persistentVolumeClaim": {"claimName": claim}})
    if deadline:
        volumes.append({"name": RUN_VOLUME, "emptyDir": {}})
    if volumes:
        pod_spec["volumes"] = volumes
    if ckpt:
        _checkpoint_ownership(pod_spec)
    pod_spec["hostname"] = name
    pod_spec["subdomain"] = service_name(meta.name)
    pod_spec["restartPolicy"] = "Never"
    if spec.run_policy.scheduler_name:
        pod_spec["schedulerName"] = spec.run_policy.scheduler_name
    if spec.run_policy.priority_class_name:
        pod_spec["priorityClassName"] = spec.run_policy.priority_class_name
    _place(pod_spec, placement)

    labels = {**(tmeta.get("labels") or {}), **_labels(job),
              LABEL_WORKER_INDEX: str(launch.index), LABEL_ATTEMPT: str(launch.attempt)}
    pod_meta: dict[str, Any] = {
        "name": name,
        "namespace": meta.namespace,
        "labels": labels,
        "ownerReferences": [owner_reference(job)],
    }
    if tmeta.get("annotations"):
        pod_meta["annotations"] = dict(tmeta["annotations"])
    return {"apiVersion": "v1", "kind": "Pod", "metadata": pod_meta, "spec": pod_spec}


def headless_service(job: DistributedTrainingJob) -> dict[str, Any]:
    """One Service for all attempts: each pod's hostname carries its attempt, so DNS never collides,
    and addresses are published before readiness because the rendezvous precedes readiness.

    A torchrun gang needs one name only, worker 0's (the rendezvous endpoint and the agents' store;
    every other address travels through that store as an IP), so the Service selects worker 0 alone.
    Selecting every worker made the endpoints and EndpointSlice controllers rewrite an N-address
    object on every pod change of the gang (the bench's P2 counted 11 such writes per 8-worker job,
    racing the scheduler for the apiserver). A tensorflow job's TF_CONFIG names every worker: it
    selects all of them."""
    meta = job.metadata
    selector = {LABEL_JOB_NAME: meta.name}
    if job.spec.runtime != Runtime.TENSORFLOW:
        selector[LABEL_WORKER_INDEX] = "0"
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": service_name(meta.name),
            "namespace": meta.namespace,
            "labels": _labels(job),
            "ownerReferences": [owner_reference(job)],
        },
        "spec": {
            "clusterIP": "None",
            "publishNotReadyAddresses": True,
            "selector": selector,
            "ports": [{"name": "rendezvous", "port": job.spec.rendezvous.port,
                       "targetPort": job.spec.rendezvous.port, "protocol": "TCP"}],
        },
    }


def checkpoint_claim(job: DistributedTrainingJob) -> dict[str, Any] | None:
    """The claim to create, or None when the job mounts an existing one (or none)."""
    ckpt, meta = job.spec.checkpoint, job.metadata
    if ckpt is None or not ckpt.created_claim:
        return None
    claim_meta: dict[str, Any] = {"name": claim_name(meta.name), "namespace": meta.namespace, "labels": _labels(job)}
    if not ckpt.retain:
        claim_meta["ownerReferences"] = [owner_reference(job)]
    spec: dict[str, Any] = {
        "accessModes": list(ckpt.access_modes or ["ReadWriteMany"]),
        "resources": {"requests": {"storage": ckpt.size}},
    }
    if ckpt.storage_class_name is not None:
        spec["storageClassName"] = ckpt.storage_class_name
    return {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": claim_meta, "spec": spec}


def workload(job: DistributedTrainingJob) -> dict[str, Any]:
    """The Kueue Workload of a queued job (e2e/kueue/README.md, route A): one pod set of
    spec.workers pods whose template is worker 0's pod minus its name-specific fields, so Kueue
    counts exactly what will run (init containers, sidecars, overhead, the template's own node
    selector and tolerations, which it matches against the flavours). Owned by the job (garbage
    collection takes it), no finalizer: a deleted Workload releases its quota at once."""
    meta = job.metadata
    pod = worker_pod(job, Launch(workload_name(meta.name, meta.uid), 0, 0, 0))
    spec = pod["spec"]
    for key in ("hostname", "subdomain"):
        spec.pop(key, None)
    template_meta = {"labels": {k: v for k, v in pod["metadata"]["labels"].items()
                                if k not in (LABEL_WORKER_INDEX, LABEL_ATTEMPT)}}
    if pod["metadata"].get("annotations"):
        template_meta["annotations"] = pod["metadata"]["annotations"]
    return {
        "apiVersion": "kueue.x-k8s.io/v1beta2",
        "kind": "Workload",
        "metadata": {
            "name": workload_name(meta.name, meta.uid),
            "namespace": meta.namespace,
            "labels": {**_labels(job), "kueue.x-k8s.io/job-uid": meta.uid},
            "ownerReferences": [owner_reference(job)],
        },
        "spec": {
            "queueName": meta.labels[LABEL_QUEUE_NAME],
            "active": not job.spec.run_policy.suspend,
            "podSets": [{"name": "workers", "count": job.spec.desired_workers,
                         "template": {"metadata": template_meta, "spec": spec}}],
        },
    }
