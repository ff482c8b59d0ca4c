"""Adapters that let agent frameworks keep their sessions in threadkeep.

Each adapter is one module behind an extra of the same name, proven by its framework's own
tests (``make test-integrations``):

- ``threadkeep.integrations.claude_agent.ThreadkeepSessionStore``: the Claude Agent SDK's
  ``SessionStore`` (extra ``claude_agent``).
- ``threadkeep.integrations.openai_agents.ThreadkeepSession``: the OpenAI Agents SDK's
  ``Session`` (extra ``openai_agents``).
- ``threadkeep.integrations.pydantic_ai.ThreadkeepConversationStore``: pydantic-ai's
  ``ConversationStore`` (extra ``pydantic_ai``).

Every adapter takes a ``Store`` (called from a worker thread) or an ``AsyncStore``, and a
required ``retention``: the conversations an agent writes live as long as you say, never by a
default you did not choose. ``threadkeep import --from …`` (``threadkeep.importers``) moves
histories in from LangChain's and the OpenAI Agents SDK's own stores.
"""
