"""gpulab: the GPU-aware parts that run inside JupyterHub.

Layout (one job per module):

- ``gpu``: devices, inventories (NVML, simulated) and placement (pure).
- ``quota``: limits, their resolution across groups and overrides, and decisions (pure).
- ``profiles``, ``request``, ``form``: the profile catalogue, the validated spawn request and the
  spawn form's model (pure).
- ``store``: our own SQLAlchemy tables, migrations and the race-safe allocator (database adapter).
- ``core``: wires the above together, one per hub process.
- ``spawners``: the GPU mixin written once, and backends that only apply an allocation.
- ``settings``: ``gpulab.yaml`` schema, loading and translation into traitlets config.
- ``reconcile``, ``lifeline``, ``outage``: crash-proofing: what really runs on each backend against
  what is allocated, the tiny parent process of every local server and service, database outages.
- ``cluster``, ``slurm``, ``kube``: what the SLURM and Kubernetes backends need beyond the seam
  (capacity readers, batch scripts and job states, pod settings, queue messages, Helm values).
"""

__version__ = "0.1.0"
