"""Keeping gpulab's allocations true to what really runs, whatever crashed.

- ``decide``: the pure decisions (which servers are orphans, which allocations and usage records
  belong to nothing alive), tested with tables.
- ``runtime``: what every backend adapter answers ("which of this hub's servers really run,
  stop this one, when was that one last alive").
- ``local``: the adapter for local processes (their environment in /proc, their lifeline files).
- ``supervisor``: the loop in the hub: once at start-up before any spawn, then every poll interval.
"""
