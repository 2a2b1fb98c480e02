"""The data types that cross packages, defined once: every other package imports them from here.

`records` sits at the very bottom of the import graph (it imports only pydantic), so `rewards/`,
`tasks/`, `agent/`, `evolve/` and `tui/` all speak the same `Trajectory`, `TestReport` and `Reward`.
Each record carries a `schema_version` so stored data stays readable as the records evolve.
"""

from records.task import TaskInstance
from records.trajectory import Message, Step, ToolCall, Trajectory, TrajectoryStatus
from records.grading import TestReport, TestStatus
from records.reward import Reward
from records.evolution import PolicyVersion, TrainStep, TreeNode

__all__ = [
    "TaskInstance",
    "Message",
    "Step",
    "ToolCall",
    "Trajectory",
    "TrajectoryStatus",
    "TestReport",
    "TestStatus",
    "Reward",
    "PolicyVersion",
    "TrainStep",
    "TreeNode",
]
