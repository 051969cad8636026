"""Telling people what happens to their servers: by email, at their own choice.

``compose`` (pure) turns one of gpulab's events into a message; ``prefs`` stores who wants what
and where the notifier stands in the events; ``smtp`` sends. The culler service runs the loop
(``services/culler/notify.py``); people choose on their usage page (``/services/billing/``).
"""
