"""gpulab's hub services, each a JupyterHub managed service: billing (usage, budgets, GPUs, the
queue, metrics), the GPU-aware culler, quotas (admin overrides and audit) and MLflow."""

import sys

# jsonschema (gpulab's settings schema) imports rfc3987_syntax when it is installed (jupyter-events
# pulls it in for the single-user servers that share this environment) to check the "iri"
# formats, and that module compiles a grammar on import: 2 s of every service's start, which
# JupyterHub waits for one service after another before the hub answers. gpulab's schemas use no
# such format; without the module jsonschema simply skips those checks.
sys.modules.setdefault("rfc3987_syntax", None)
