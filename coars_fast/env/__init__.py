"""The environment in plain Python (no torch, no model): prompts, parsers, the episode state machine."""

from coars_fast.env.episode import MAX_TURNS, EpisodeState, PeerEvidence, Turn
from coars_fast.env.parsing import ACTIONS, Recommendation, UserReply, parse_recommendation, parse_user_reply
from coars_fast.env.prompts import DOMAINS, GENERIC, Domain

__all__ = [
    "ACTIONS",
    "DOMAINS",
    "GENERIC",
    "MAX_TURNS",
    "Domain",
    "EpisodeState",
    "PeerEvidence",
    "Recommendation",
    "Turn",
    "UserReply",
    "parse_recommendation",
    "parse_user_reply",
]
