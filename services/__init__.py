"""gpulab's hub services, each a JupyterHub managed service: billing (usage, budgets, GPUs, the
queue, metrics), the GPU-aware culler, quotas (admin overrides and audit) and MLflow."""
