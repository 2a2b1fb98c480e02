"""Textual app: live run dashboard, self-modification tree and trajectory inspection."""
