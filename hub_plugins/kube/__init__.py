"""Kubernetes: capacity from nodes and pods, pod settings from profiles, the queue of
unschedulable pods, and the z2jh Helm values generator (pure parts; I/O in ``capacity``)."""
