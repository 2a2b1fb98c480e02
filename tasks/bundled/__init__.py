"""The bundled suite: small Python repositories written for this project, in SWE-bench's instance format.

Each repository lives under `repos/<name>/` as a `git format-patch` series (`history/`), a gold fix
(`gold.patch`), hidden tests (`test.patch`), the issue text (`issue.md`) and `meta.json`.
`materialize` replays a series into a git repository with a deterministic HEAD; `build_instances`
regenerates `instances.jsonl` from those sources; `BundledSuite` serves the instances.
"""
