"""What the cluster backends (SLURM, Kubernetes) share: a capacity reader that refreshes in the
background, and the check that a request could ever fit one node."""
