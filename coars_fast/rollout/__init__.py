"""Rollouts: the batched episode runner over the agents (and, for training, the collector)."""

from coars_fast.rollout.runner import Agents, make_states, run_episodes

__all__ = ["Agents", "make_states", "run_episodes"]
