"""`trainyard operator` and `trainyard crd`: the cluster side."""

from __future__ import annotations

import asyncio
import logging
import os
from pathlib import Path

import typer

from ..api.names import DEFAULT_CLUSTER_DOMAIN, parse_cluster_domain


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
    asyncio.run(kopf.operator(
        standalone=True,
        clusterwide=not namespace,
        namespaces=namespace or [],
        memo=memo,
        liveness_endpoint=liveness,
    ))
