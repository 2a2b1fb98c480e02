"""Run orchestration: opening a run directory, the same way for every command (`opening`: checked, locked,
resumed only with the settings it must keep; `run_lock`), one episode (`episode`), a suite's run (`runner`, opened
by `start` for `evolve run`), where episodes run (`executor`: threads or Ray; `remote_episode`: an episode as a
Ray task) and the bundled tasks' local workspaces (`local_tasks`). The run store it writes is `evolve.store`, below
it."""
