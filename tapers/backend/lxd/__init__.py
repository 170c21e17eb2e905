"""The LXD backend: machines are LXD instances, on one host or a cluster, reached over
its REST API (backend.py: the instances; networking.py: LXD managed networks and proxy
devices; checks.py: what `tapers doctor` checks)."""
