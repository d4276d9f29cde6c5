"""Rollouts: the batched episode runner, the training collector, peer evidence and packing."""

from coars_fast.rollout.collector import Rollout, RolloutSettings, TurnSample, collect
from coars_fast.rollout.packing import PackedBatch, PackedStream, pack, padding_report
from coars_fast.rollout.peers import PeerIndex
from coars_fast.rollout.runner import Agents, make_states, run_episodes
from coars_fast.rollout.tree_packing import pack_trees

__all__ = [
    "Agents",
    "PackedBatch",
    "PackedStream",
    "PeerIndex",
    "Rollout",
    "RolloutSettings",
    "TurnSample",
    "collect",
    "make_states",
    "pack",
    "pack_trees",
    "padding_report",
    "run_episodes",
]
