"""Torch robot policies, registered by name and built by one factory, ``make_policy``."""

from policies.registry import available_policies, make_policy, register_policy

__all__ = ["available_policies", "make_policy", "register_policy"]
