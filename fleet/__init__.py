"""fleet: GitOps for Ansible fleets."""

__version__ = "0.1.0"
