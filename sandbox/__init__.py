"""Sandboxes: isolated places to run an agent's commands (Docker containers, or bubblewrap locally)."""
