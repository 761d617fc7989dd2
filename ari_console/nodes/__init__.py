"""How the console reaches nodes: transports (local, ssh) times batch systems (none, slurm, pbs)."""

from __future__ import annotations

from ..config import Node
from .transport import LocalTransport, NodeUnreachable, SSHTarget, SSHTransport, Transport

__all__ = ["connect", "NodeUnreachable", "Transport"]


def connect(node: Node) -> Transport:
    """The transport for a configured node (SSH connects lazily, on first use)."""
    if node.transport == "local":
        return LocalTransport(name=node.name, env=dict(node.env))
    target = SSHTarget(name=node.name, host=node.host or "", port=node.port, user=node.user,
                       identity_file=node.identity_file, known_hosts=node.known_hosts,
                       trust_new_host_keys=node.trust_new_host_keys)
    return SSHTransport(target, env=dict(node.env))
