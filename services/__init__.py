"""gpulab's hub services: billing (usage, budgets, GPUs, queue, metrics) and the GPU-aware culler."""
