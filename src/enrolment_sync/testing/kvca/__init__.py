"""The KVCA simulator: the upstream contract's endpoints over generated Korean data, for the demo, tests, benchmarks.

A FastAPI app (`app`) implementing the contract (`endpoints`), plus `/_control` routes without auth
(`control`) with which the demo, the tests and the benchmarks change data and inject faults. The same
operations are methods of `SimulatorState` (`state`), which is thread-safe, so a test can drive a
`RunningSimulator` from its own thread while uvicorn serves on another. The data (`data`) is the same for the
same `SimulatorConfig`.
"""

from .app import RunningSimulator, create_app, serve
from .data import COURSE_NAMES, STATUS_MSG, STATUSES, SimulatorConfig
from .state import BadRequest, Conflict, Fault, NotFound, SimulatorError, SimulatorState

__all__ = [
    "COURSE_NAMES",
    "STATUSES",
    "STATUS_MSG",
    "BadRequest",
    "Conflict",
    "Fault",
    "NotFound",
    "RunningSimulator",
    "SimulatorConfig",
    "SimulatorError",
    "SimulatorState",
    "create_app",
    "serve",
]
