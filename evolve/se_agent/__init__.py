"""SE-Agent: self-evolution of trajectories (pilots, revision / recombination / refinement operators whose
strategy text is added to the agent's prompt per instance, visible-only selection, hidden-test report)."""
