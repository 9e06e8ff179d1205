"""Peer workloads: run by the harness inside the peers' own virtualenv (never imports tri24es)."""
