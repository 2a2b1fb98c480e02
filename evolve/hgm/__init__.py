"""The Huxley-Gödel Machine: a tree of self-modified agents searched by clade-metaproductivity (CMP).

stats (clade counts from immutable outcome rows) · policy (pure decision rules: Thompson sampling, widening,
final pick, baselines) · scheduler (the one event-driven scheduler and its two drivers) · world (the interface
both simulated and real worlds implement) · sim (simulated worlds) · journal (the run store as the scheduler's
memory, for resume) · real (the Docker world: self-modification and evaluation) · cli (`evolve hgm`, `evolve tree`).
"""
