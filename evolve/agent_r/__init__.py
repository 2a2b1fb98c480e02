"""Agent-R: MCTS-built revision trajectories and iterative self-training (arXiv 2501.11425), on Evolve's records.

The pieces, one file each:

- `config`: `AgentRConfig` (every knob, documented defaults; thresholds parsed as floats with validation).
- `tree`: the MCTS (UCT with c=0.25, unvisited children first, terminal children never chosen, backprop).
- `world`: what a search runs in (`World`): sample N responses at a node and execute each from the node's state.
- `pairs`: (high, low) root-to-leaf path pairs with a value gap > beta and a high value > alpha.
- `verifier`: the current policy as verifier, strict `Judgment: Good|Bad|Uncertain` parsing, first error.
- `splice`: bad prefix (no loss) + an `undo` revision turn (loss) + a good continuation from the flagged step's
  parent (loss); upstream-style splices as controls.
- `toy`: the number-line world with a tabular policy and an exact oracle verifier (acceptance checks).
- `swe`: the SWE world: the real agent in Docker sandboxes, branches by reset + replay, rewards from grading.
- `toolcall`: the tool-calling world: one answer per episode rewarded by ToolRL's reward, `undo` withdraws it;
  `toolcall_evaluate` its held-out evaluation (ToolRL reward, exact answers, recovery, loops).
- `build`: one instance end to end (search, pairs, verdicts, splices, replay check) with everything stored.
- `loop`: `evolve agent-r SUITE`: iterations of MCTS -> data -> SFT -> new policy version, with evaluation;
  the world (SWE or tool-calling) is chosen by the suite's kind.
"""
