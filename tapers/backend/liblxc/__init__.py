"""The liblxc backend: machines are python-lxc containers on this host, on tapers' own
bridge, NAT and nftables rules (backend.py: the containers; networking.py: what the
backend needs from the host's network, made of bridges.py, ports.py and host.py;
checks.py: what `tapers doctor` checks)."""
