"""The coding agent: LangGraph loop, tools, policy clients, trajectory recording.

Importing it sets ``OMP_WAIT_POLICY=PASSIVE`` unless the user set it: torch's and llama.cpp's OpenMP threads
then sleep between parallel regions instead of spinning. On a shared or busy CPU spinning threads starve each
other: measured on this 2-core machine at load 13, a 2-thread torch matmul ran at 337/s spinning against 646/s
passive, and llama.cpp decoded 0.8 tokens/s spinning against 15.7 passive (`bench/bench_threads.py`). It must
be set before torch or llama_cpp load OpenMP, which both only do inside functions of this package and its users.
Set ``OMP_WAIT_POLICY=ACTIVE`` on a dedicated machine to trade that robustness for a little latency.
"""

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
