"""Talking to machines over SSH: keys, the OpenSSH config, paramiko sessions."""
