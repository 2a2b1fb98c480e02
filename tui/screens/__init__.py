"""The TUI's screens: runs, run dashboard, trajectory inspector, tree, training; and two small dialogs."""
