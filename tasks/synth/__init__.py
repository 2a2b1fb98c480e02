"""Task synthesis: SWE-style training tasks made offline from real Python repositories.

A *source* (a bundled repository, a local git repository or a pinned PyPI package) is built into an
environment image (`env_image`); procedural bug *families* (`families/`, tree-sitter over functions and
classes) or a policy (`llm_bugs`) break one function or class; the bug is kept only if the repository's
own tests show it, validated in Evolve's sandboxes (`validate`, `worker`); the reverse diff is the gold
patch, graded by the same path as every suite (`tasks.grading`). The rows are SWE-bench instances
(`rows`), loaded by `evolve run synth:FILE` (`suite`). `curriculum` is the Self-Evolving Curriculum over
the rows' categories.
"""
