"""Thin HTTP routes: read the request, ask the agent, hand a context to a template."""
