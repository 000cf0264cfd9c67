"""Framework adapters, each a thin module over ``Gate`` (import the one you use; each needs its extra):

- :mod:`sluicegate.adapters.langchain` — ``governed(tool, gate, ...)`` for any LangChain ``BaseTool``
  (LangGraph's ``ToolNode`` included): ``pip install 'sluicegate[langchain]'``;
- :mod:`sluicegate.adapters.openai_agents` — tool guardrails for the OpenAI Agents SDK's function tools:
  ``pip install 'sluicegate[openai-agents]'``.
"""
