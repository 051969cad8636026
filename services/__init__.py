"""Hub-managed services that ship with gpulab (each in its own package)."""
