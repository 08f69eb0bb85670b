#!/usr/bin/env python3
"""Render Kueue's CRDs and webhook configurations for a Kueue that runs as a local process.

Kueue's kustomize overlay points every webhook (admission and CRD conversion) at the in-cluster
Service `kueue-webhook-service`. Here Kueue is a process on the host, so each clientConfig becomes
`url: https://127.0.0.1:<port><path>` with our own CA bundle, and only the webhooks Kueue serves
for the enabled integrations are kept (Kueue answers the others with a no-op, but a webhook for a
built-in kind such as Deployment would add a failure point to every Deployment for nothing).

Usage: manifests.py CONFIG_DIR PORT CA_FILE FRAMEWORKS OUT_CRDS OUT_WEBHOOKS
  CONFIG_DIR  holds crd/*.yaml and webhook/manifests.yaml (exported by build.sh from the module)
  FRAMEWORKS  comma-separated integrations.frameworks, e.g. "batch/job,pod"
"""
import base64
import glob
import os
import sys

import yaml

# libyaml when present: the Workload CRD alone is 1.4 MB, 10x slower with the pure-Python parser.
Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
Dumper = getattr(yaml, "CSafeDumper", yaml.SafeDumper)

# The CRDs whose conversion webhook Kueue's kustomization enables
# (config/components/crd/kustomization.yaml: patches/webhook_in_*.yaml).
CONVERSION_CRDS = {
    "localqueues.kueue.x-k8s.io",
    "clusterqueues.kueue.x-k8s.io",
    "cohorts.kueue.x-k8s.io",
    "workloads.kueue.x-k8s.io",
    "multikueueclusters.kueue.x-k8s.io",
}

# (apiGroup, resource) of a webhook rule -> integration name in Configuration.integrations.frameworks.
BUILTIN = {
    ("", "pods"): "pod",
    ("batch", "jobs"): "batch/job",
    ("apps", "deployments"): "deployment",
    ("apps", "statefulsets"): "statefulset",
    ("jobset.x-k8s.io", "jobsets"): "jobset.x-k8s.io/jobset",
    ("leaderworkerset.x-k8s.io", "leaderworkersets"): "leaderworkerset.x-k8s.io/leaderworkerset",
}
# What config/components/webhook/kustomization.yaml adds to the pod/deployment/statefulset webhooks.
SYSTEM_NS_SELECTOR = {
    "matchExpressions": [
        {"key": "kubernetes.io/metadata.name", "operator": "NotIn", "values": ["kube-system", "kueue-system"]}
    ]
}


def integration_of(webhook):
    for rule in webhook.get("rules", []):
        for group in rule.get("apiGroups", []):
            if group == "kueue.x-k8s.io":
                return "kueue"
            for res in rule.get("resources", []):
                name = BUILTIN.get((group, res))
                if name:
                    return name
                return f"{group}/{res}"
    return None


def main(argv):
    config_dir, port, ca_file, frameworks, out_crds, out_webhooks = argv[1:7]
    enabled = {f for f in frameworks.split(",") if f}
    with open(ca_file, "rb") as f:
        ca_bundle = base64.b64encode(f.read()).decode()
    base_url = f"https://127.0.0.1:{int(port)}"

    crds = []
    for path in sorted(glob.glob(os.path.join(config_dir, "crd", "*.yaml"))):
        with open(path) as f:
            for doc in yaml.load_all(f, Loader=Loader):
                if not doc:
                    continue
                if doc["metadata"]["name"] in CONVERSION_CRDS:
                    doc["spec"]["conversion"] = {
                        "strategy": "Webhook",
                        "webhook": {
                            "clientConfig": {"url": base_url + "/convert", "caBundle": ca_bundle},
                            "conversionReviewVersions": ["v1"],
                        },
                    }
                crds.append(doc)

    out = []
    kept, dropped = [], []
    with open(os.path.join(config_dir, "webhook", "manifests.yaml")) as f:
        for doc in yaml.load_all(f, Loader=Loader):
            if not doc:
                continue
            # kustomize's namePrefix in config/default: "kueue-".
            doc["metadata"] = {"name": "kueue-" + doc["metadata"]["name"]}
            hooks = []
            for w in doc.get("webhooks", []):
                integ = integration_of(w)
                if integ != "kueue" and integ not in enabled:
                    dropped.append(w["name"])
                    continue
                path = w["clientConfig"]["service"]["path"]
                w["clientConfig"] = {"url": base_url + path, "caBundle": ca_bundle}
                if integ in ("pod", "deployment", "statefulset"):
                    w["namespaceSelector"] = SYSTEM_NS_SELECTOR
                hooks.append(w)
                kept.append(w["name"])
            doc["webhooks"] = hooks
            out.append(doc)

    with open(out_crds, "w") as f:
        yaml.dump_all(crds, f, Dumper=Dumper, sort_keys=False)
    with open(out_webhooks, "w") as f:
        yaml.dump_all(out, f, Dumper=Dumper, sort_keys=False)
    print(f"webhooks kept: {' '.join(kept)}", file=sys.stderr)
    print(f"webhooks dropped (integration not enabled): {' '.join(dropped)}", file=sys.stderr)


if __name__ == "__main__":
    main(sys.argv)
