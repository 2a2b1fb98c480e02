"""Run orchestration: one episode (`episode`), a suite's run (`runner`), where episodes run (`executor`:
threads or Ray; `remote_episode`: an episode as a Ray task), the run directory's lock (`run_lock`) and the
bundled tasks' local workspaces (`local_tasks`). The run store it writes is `evolve.store`, below it."""
