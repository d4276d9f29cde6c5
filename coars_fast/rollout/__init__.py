"""Rollouts: the batched episode runner, the training collector, peer evidence and packing."""

from coars_fast.rollout.collector import Rollout, RolloutSettings, TurnSample, collect
from coars_fast.rollout.packing import PackedBatch, PackedStream, pack, padding_report
from coars_fast.rollout.peers import PeerIndex
from coars_fast.rollout.runner import Agents, make_states, run_episodes

__all__ = [
    "Agents", "PackedBatch", "PackedStream", "PeerIndex", "Rollout", "RolloutSettings", "TurnSample", "collect",
    "make_states", "pack", "padding_report", "run_episodes",
]
