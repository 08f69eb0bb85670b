"""`trainyard operator` and `trainyard crd`: the cluster side."""

from __future__ import annotations

import asyncio
import gc
import logging
import os
from pathlib import Path

import typer

from ..api.names import DEFAULT_CLUSTER_DOMAIN, parse_cluster_domain

# The operator's heap is long-lived and mostly acyclic (kopf's memory of each object, the pod index,
# the jobs' loops): with CPython's default thresholds (700, 10, 10) a full collection ran each time
# it grew by a quarter, and collections took 23 % of the operator's CPU through P2's burst and 30 % of
# a restart with 4,000 pods (1.87 s of 6.2 s; 0.71 s with these). Young collections every 10,000
# allocations instead of 700; the older generations as before.
GC_THRESHOLDS = (10_000, 10, 10)


def tune_gc() -> None:
    gc.collect()
    gc.freeze()  # what the imports made: never garbage, never scanned again
    gc.set_threshold(*GC_THRESHOLDS)


def crd() -> None:
    """Print the DistributedTrainingJob CustomResourceDefinition."""
    from ..api.crd import render

    typer.echo(render(), nl=False)


def operator(
    namespace: list[str] = typer.Option(None, "--namespace", "-n", help="Watch only these namespaces."),
    kubeconfig: Path | None = typer.Option(None, help="Kubeconfig to use (default: in-cluster or ~/.kube/config)."),
    liveness: str | None = typer.Option(None, help="Liveness endpoint, e.g. http://0.0.0.0:8080/healthz."),
    log_format: str = typer.Option("plain", help="plain or json."),
    metrics_port: int = typer.Option(9090, help="Serve Prometheus metrics on this port (0: off)."),
    cluster_domain: str = typer.Option(
        DEFAULT_CLUSTER_DOMAIN, envvar="TRAINYARD_CLUSTER_DOMAIN",
        help="The cluster's DNS domain (the kubelet's clusterDomain): worker pods find worker 0 at "
             "<pod>.<job>.<namespace>.svc.<domain>."),
    verbose: bool = typer.Option(False, "--verbose", "-v"),
) -> None:
    """Run the operator (kopf, standalone: one replica, no peering)."""
    try:
        domain = parse_cluster_domain(cluster_domain)
    except ValueError as e:
        raise typer.BadParameter(str(e), param_hint="--cluster-domain") from None
    if kubeconfig is not None:
        # Before importing kopf: the kubernetes library reads KUBECONFIG once, at import.
        os.environ["KUBECONFIG"] = str(kubeconfig)
    import kopf

    from ..kube import controller  # noqa: F401  (registers the handlers)
    kopf.configure(
        verbose=verbose,
        log_format=kopf.LogFormat.JSON if log_format == "json" else kopf.LogFormat.PLAIN,
        log_prefix=True,
    )
    logging.getLogger("kubernetes.client.rest").setLevel(logging.WARNING)
    if not verbose:
        # kopf logs "Handler 'pod_event' succeeded." at INFO for every event: ~6 lines per pod, 24,000
        # for a burst of 4,000 pods. Its warnings and errors (and ours) still show.
        logging.getLogger("kopf.objects").setLevel(logging.WARNING)
    memo = kopf.Memo(kubeconfig=str(kubeconfig) if kubeconfig else None, metrics_port=metrics_port,
                     cluster_domain=domain)
    tune_gc()
    asyncio.run(kopf.operator(
        standalone=True,
        clusterwide=not namespace,
        namespaces=namespace or [],
        memo=memo,
        liveness_endpoint=liveness,
    ))
