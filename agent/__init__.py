"""The coding agent: LangGraph loop, tools, policy clients, trajectory recording."""
