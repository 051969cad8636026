"""Hub services that ship with gpulab (each runs as a JupyterHub managed service)."""
