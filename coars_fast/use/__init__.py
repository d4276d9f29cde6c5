"""Using trained agents: a recommendation for a given history, a conversation in which a person is
the User, and an adapter merged into a standalone model."""

from coars_fast.use.conversation import Conversation, parse_person_reply, resolve_items
from coars_fast.use.export import export_agent

__all__ = ["Conversation", "export_agent", "parse_person_reply", "resolve_items"]
