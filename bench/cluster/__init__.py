"""The benchmark on a cluster (`make deploy`, `make bench`, `make results`), one module per step.

`python -m bench.cluster` is the command line the Makefile calls (`__main__.py`):

- `deploy`: the kustomization `make deploy` applies, an overlay with each server's pushed image;
- `testruns`: `run` renders the TestRuns (k6/render.py), checks the client pool can hold their
  runners, applies them, waits, reads the runner pods and keeps the run's record;
- `prometheus`: what is asked of the cluster's Prometheus, per server, over the run's window;
- `results`: `collect` turns those answers into the summary.json + report of `make bench-local`;
- `kube`: kubectl, Kubernetes quantities and timestamps, and the one error a person can fix.
"""

# k8s/tests/test_manifests.py reads the manifests' requests and limits with the parser `make bench` uses.
from bench.cluster.kube import quantity

__all__ = ["quantity"]
