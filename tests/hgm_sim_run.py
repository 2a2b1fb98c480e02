"""Helper process for the SIGKILL test: a store-backed HGM search of a simulated world (thread driver, one
worker, optional real sleeps); prints the final tree as one JSON line."""

import json
import sys
import time

from evolve.hgm.config import HGMConfig
from evolve.hgm.search import open_search, run_search
from evolve.hgm.sim import MismatchWorld
from evolve.store import RunStore


class SlowWorld(MismatchWorld):
    def __init__(self, seed, scale):
        super().__init__(seed, n_tasks=30)
        self.scale = scale

    def evaluate(self, node, task_id):
        time.sleep(self.scale)
        return super().evaluate(node, task_id)


if __name__ == "__main__":
    out, scale = sys.argv[1], float(sys.argv[2]) if len(sys.argv) > 2 else 0.0
    with RunStore(out) as store:
        sched = open_search(HGMConfig(budget=150, seed=5), SlowWorld(5, scale), store, "sim")
        run_search(sched, SlowWorld(5, scale), workers=1)
        state = {"nodes": sorted((i, n.parent_id, n.status) for i, n in sched.nodes.items()),
                 "own": sorted((i, sched.stats.own(i)) for i in sched.stats.nodes()),
                 "pick": sched.final_pick(), "rows": len(store.outcomes(run_id="sim"))}
    print(json.dumps(state))
