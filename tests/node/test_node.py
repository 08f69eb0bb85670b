"""The real node itself and the trainer image in real pods, without the operator: the worker pods
and the headless Service come from the product's own pure builders (trainyard.builders), minus
the owner reference (there is no DistributedTrainingJob object here for them to belong to)."""

from __future__ import annotations

import json
import re
import subprocess
import time
import uuid

from trainyard.api import DistributedTrainingJob
from trainyard.engine import Launch
from trainyard.kube.manifests import headless_service, worker_pod

from ..support import ALL_REDUCE
from .conftest import NODE_NAME, STORAGE_CLASS, Node, wait_for


def _job(ns: str, name: str, image: str, script: str, workers: int = 2, **spec) -> DistributedTrainingJob:
    command = ["sh", "-c", f"cat > /tmp/train.py <<'PY'\n{script}\nPY\nexec trainyard-launch /tmp/train.py"]
    return DistributedTrainingJob.from_dict({
        "apiVersion": "trainyard.dev/v1alpha1", "kind": "DistributedTrainingJob",
        "metadata": {"name": name, "namespace": ns, "uid": str(uuid.uuid4()), "generation": 1},
        "spec": {"workers": workers, "rendezvous": {"joinTimeoutSeconds": 300},
                 "template": {"spec": {"containers": [{
                     "name": "trainer", "image": image, "imagePullPolicy": "IfNotPresent", "command": command,
                     "resources": {"requests": {"cpu": "100m", "memory": "256Mi"}}}]}},
                 **spec},
    })


def _orphan(manifest: dict) -> dict:
    manifest["metadata"].pop("ownerReferences", None)
    return manifest


def _gang(node: Node, job: DistributedTrainingJob) -> list[str]:
    node.apply(_orphan(headless_service(job)))
    names = []
    for i in range(job.spec.workers):
        pod = _orphan(worker_pod(job, Launch(f"{job.metadata.name}-0-{i}", i, 0, 0)))
        node.apply(pod)
        names.append(pod["metadata"]["name"])
    return names


def _wait_succeeded(node: Node, ns: str, pods: list[str], timeout: float) -> None:
    def done():
        phases = [node.pod_phase(ns, p) for p in pods]
        assert "Failed" not in phases, f"a pod failed: {phases}\n{node.diagnostics(ns)}"
        return all(p == "Succeeded" for p in phases)
    try:
        wait_for(done, timeout, f"pods {pods} to succeed")
    except AssertionError as e:
        raise AssertionError(f"{e}\n{node.diagnostics(ns)}") from None


def test_the_node_is_a_real_kubelet(node: Node):
    n = node.get("node", NODE_NAME)
    info = n["status"]["nodeInfo"]
    assert info["kubeletVersion"] == "v1.36.3"
    assert info["containerRuntimeVersion"].startswith("containerd://1.6")
    assert [c["status"] for c in n["status"]["conditions"] if c["type"] == "Ready"] == ["True"]


def test_kwok_leaves_the_real_node_and_its_pods_alone(node: Node, ns: str):
    """kwok-controller runs with --manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake
    (e2e/cluster/up.sh): it plays the kubelet of an annotated fake node, and never writes to the
    real node or its pods (every status field manager there is the kubelet)."""
    fake = f"kwok-{ns}"
    node.apply({"apiVersion": "v1", "kind": "Node",
                "metadata": {"name": fake, "annotations": {"kwok.x-k8s.io/node": "fake"}, "labels": {"type": "kwok"}},
                "spec": {"taints": [{"key": "kwok.x-k8s.io/node", "value": "fake", "effect": "NoSchedule"}]}})
    try:
        wait_for(lambda: [c["status"] for c in (node.get("node", fake) or {}).get("status", {}).get("conditions", [])
                          if c["type"] == "Ready"] == ["True"], 60, "kwok to make its fake node Ready")
        node.apply({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "real", "namespace": ns},
                    "spec": {"nodeSelector": {"kubernetes.io/hostname": NODE_NAME}, "restartPolicy": "Never",
                             "containers": [{"name": "c", "image": node.operator_image, "command": ["sleep", "30"]}]}})
        wait_for(lambda: node.pod_phase(ns, "real") == "Running", 120, "the pod on the real node to run")

        def status_managers(obj: dict) -> set[str]:
            return {f["manager"] for f in obj["metadata"].get("managedFields", []) if f.get("subresource") == "status"}
        fake_managers = status_managers(node.get("node", fake, managed_fields=True))
        real_managers = status_managers(node.get("node", NODE_NAME, managed_fields=True))
        pod_managers = status_managers(node.get("pod", "real", ns, managed_fields=True))
        assert fake_managers and "kubelet" not in fake_managers, fake_managers
        assert real_managers == {"kubelet"}, real_managers
        assert pod_managers == {"kubelet"}, pod_managers
        status = node.get("pod", "real", ns)["status"]
        assert status["containerStatuses"][0]["containerID"].startswith("containerd://")
        assert status["podIP"].startswith("10.244.0.")
    finally:
        node.kubectl("delete", "node", fake, "--wait=false", check=False)


def test_kubectl_logs_follow_streams_from_the_kubelet(node: Node, ns: str):
    """The apiserver reaches the kubelet with its client certificate (no anonymous access)."""
    node.apply({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "ticker", "namespace": ns},
                "spec": {"restartPolicy": "Never", "containers": [{
                    "name": "c", "image": node.operator_image, "command": ["python", "-c",
                    "import time\nfor i in range(600):\n    print('tick', i, flush=True); time.sleep(0.2)"]}]}})
    wait_for(lambda: node.pod_phase(ns, "ticker") == "Running", 120, "the ticker pod to run")
    proc = subprocess.Popen([node.kubectl_bin, "--kubeconfig", node.kubeconfig, "-n", ns, "logs", "-f", "ticker"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        seen = []
        deadline = time.monotonic() + 60
        while len(seen) < 10 and time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            seen.append(line.strip())
        assert len(seen) == 10, f"kubectl logs -f gave {seen}; stderr: {proc.stderr.read() if proc.poll() else ''}"
        assert seen[0] == "tick 0" and all(s.startswith("tick ") for s in seen)
        assert proc.poll() is None, "kubectl logs -f ended although the pod still runs"
    finally:
        proc.kill()
        proc.wait(10)


def test_trainer_pods_all_reduce_over_gloo_through_the_headless_service(node: Node, ns: str):
    """Two pods of the trainer image, built by the product's builders: hostname/subdomain, the
    headless Service, PET_* env with the rendezvous endpoint worker 0's DNS name; trainyard-launch
    waits for that name to resolve, torchrun's c10d rendezvous and gloo cross the pods."""
    job = _job(ns, "ar", node.trainer_image, ALL_REDUCE)
    pods = _gang(node, job)
    _wait_succeeded(node, ns, pods, 600)
    logs = {p: node.logs(ns, p) for p in pods}
    for p, text in logs.items():
        assert re.search(r"rank [01]/2 on ar-0-[01]: all_reduce=3\.0", text), f"{p}:\n{text}"
    ips = {node.get("pod", p, ns)["status"]["podIP"] for p in pods}
    assert len(ips) == 2  # two pods, two network namespaces
    for p, text in logs.items():  # how long worker 0's record took to appear (measured, not asserted)
        m = re.search(r"rendezvous host (\S+) resolved after ([\d.]+) s", text)
        print(f"{p}: " + (f"{m.group(1)} resolved after {m.group(2)} s" if m else "resolved at the first try"))


def test_checkpoint_volume_is_writable_through_the_builders_fs_group(node: Node, ns: str):
    """A `local` PV (root-owned 0755, like a fresh file system) on the real node: the trainer's
    uid 1000 cannot write there by itself; the pod securityContext the builders add for the
    checkpoint volume (fsGroup 1000, OnRootMismatch) makes the kubelet hand it to the group."""
    claim = {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": "ck", "namespace": ns},
             "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": STORAGE_CLASS,
                      "resources": {"requests": {"storage": "1Gi"}}}}
    node.apply(claim)
    write = "id; ls -ldn /checkpoints; echo ok > /checkpoints/probe && echo WROTE"
    job = _job(ns, "ck", node.trainer_image, "", workers=1,
               checkpoint={"claimName": "ck", "mountPath": "/checkpoints"})
    pod = _orphan(worker_pod(job, Launch("ck-0-0", 0, 0, 0)))
    assert pod["spec"]["securityContext"] == {"fsGroup": 1000, "fsGroupChangePolicy": "OnRootMismatch"}
    pod["spec"]["containers"][0]["command"] = ["sh", "-c", write]
    without = json.loads(json.dumps(pod))
    without["metadata"]["name"] = "ck-nofsgroup"
    del without["spec"]["securityContext"]
    del without["spec"]["hostname"]

    node.apply(without)
    wait_for(lambda: node.pod_phase(ns, "ck-nofsgroup") in ("Succeeded", "Failed"), 180, "the pod without fsGroup")
    text = node.logs(ns, "ck-nofsgroup")
    assert "WROTE" not in text and "Permission denied" in text, text
    assert re.search(r"drwxr-xr-x \d+ 0 0 ", text), text  # root-owned 0755, as made by e2e/node/up.sh

    node.apply(pod)
    wait_for(lambda: node.pod_phase(ns, "ck-0-0") in ("Succeeded", "Failed"), 180, "the pod with the builders' fsGroup")
    text = node.logs(ns, "ck-0-0")
    assert node.pod_phase(ns, "ck-0-0") == "Succeeded" and "WROTE" in text, text
    assert re.search(r"uid=1000\(trainyard\) gid=1000\(trainyard\) groups=1000\(trainyard\)", text), text
    assert re.search(r"drwxrwsr-x \d+ 0 1000 ", text), text  # setgid, group 1000: the kubelet's fsGroup handling


def test_the_absolute_rendezvous_name_is_one_dns_question(node: Node, ns: str):
    """The builders' endpoint (`<pod>.<svc>.<ns>.svc.cluster.local.`) is asked for as is; the old
    relative `<pod>.<svc>.<ns>.svc` (3 dots < the pods' ndots:5) walked the search list first. One
    lookup of each, for names that do not exist yet (as at a gang's start), counted in the node's
    CoreDNS query log (the cluster zone only; the relative name's last try, `...svc.` as is, is
    answered by the catch-all zone, upstream on a user's cluster)."""
    from trainyard.api.names import worker_fqdn

    tag = uuid.uuid4().hex[:6]
    absolute = worker_fqdn(f"a{tag}", ns, 0, 0)
    relative = f"r{tag}-0-0.r{tag}.{ns}.svc"
    assert absolute == f"a{tag}-0-0.a{tag}.{ns}.svc.cluster.local."
    log = node.coredns_log
    start = log.stat().st_size
    script = (f"import socket\nfor h in {[absolute, relative]!r}:\n    try:\n"
              "        socket.getaddrinfo(h, 29400, type=socket.SOCK_STREAM)\n"
              "    except OSError as e:\n        print(h, 'does not resolve:', e, flush=True)\n")
    node.apply({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "dns", "namespace": ns},
                "spec": {"restartPolicy": "Never", "containers": [{"name": "c", "image": node.operator_image,
                                                                   "command": ["python", "-c", script]}]}})
    wait_for(lambda: node.pod_phase(ns, "dns") == "Succeeded", 120, "the DNS probe pod")
    assert node.logs(ns, "dns").count("does not resolve") == 2

    def asked(prefix: str) -> set[str]:
        with log.open() as f:
            f.seek(start)
            return {m.group(1) for m in re.finditer(r" (?:A|AAAA) (\S+) NXDOMAIN", f.read()) if m.group(1).startswith(prefix)}
    wait_for(lambda: asked(f"r{tag}"), 30, "CoreDNS to log the queries")
    assert asked(f"a{tag}") == {absolute}
    assert asked(f"r{tag}") == {f"{relative}.{ns}.svc.cluster.local.", f"{relative}.svc.cluster.local.",
                                f"{relative}.cluster.local."}
