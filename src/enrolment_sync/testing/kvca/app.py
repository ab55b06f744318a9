"""The simulator's app (the contract's endpoints and the control routes), served on a thread or in the foreground."""

from __future__ import annotations

import uvicorn
from fastapi import FastAPI

from ..servers import LOOPBACK, ThreadedServer
from .control import add_control_routes
from .data import SimulatorConfig
from .endpoints import add_contract_routes
from .state import SimulatorState

DEFAULT_PORT = 18081


def create_app(config: SimulatorConfig | None = None) -> FastAPI:
    """Build the simulator app; `app.state.sim` is its `SimulatorState`."""
    state = SimulatorState(config)
    app = FastAPI(title="KVCA upstream simulator", version="1", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.sim = state
    add_contract_routes(app, state)
    add_control_routes(app, state)
    return app


class RunningSimulator:
    """The simulator served by uvicorn on a background thread on 127.0.0.1.

    `port=0` binds an ephemeral free port. `__enter__` returns once the server accepts connections;
    `__exit__` stops it (in-flight hangs from timeout faults end early).
    """

    def __init__(
        self, config: SimulatorConfig | None = None, *, port: int = 0, startup_timeout_s: float = 10.0
    ) -> None:
        self.config = config if config is not None else SimulatorConfig()
        self.app = create_app(self.config)
        self.state: SimulatorState = self.app.state.sim
        self.host = LOOPBACK
        self.port = port
        self.base_url = ""
        self._server = ThreadedServer(
            self.app,
            host=self.host,
            port=port,
            lifespan="off",
            graceful_shutdown_s=5,
            startup_timeout_s=startup_timeout_s,
            stop_timeout_s=10.0,
            name="kvca-simulator",
        )

    def __enter__(self) -> RunningSimulator:
        self.state.shutting_down = False
        self._server.__enter__()
        self.port, self.base_url = self._server.port, self._server.base_url
        return self

    def __exit__(self, *exc: object) -> None:
        self.state.shutting_down = True
        self._server.__exit__(*exc)

    def url(self, path: str) -> str:
        return f"{self.base_url}{path}"


def serve(config: SimulatorConfig, *, host: str = LOOPBACK, port: int = DEFAULT_PORT) -> None:
    """Run the simulator in the foreground until interrupted (`enrolment-sync simulator`)."""
    uvicorn.Server(
        uvicorn.Config(
            create_app(config),
            host=host,
            port=port,
            log_level="warning",
            access_log=False,
            lifespan="off",
            timeout_graceful_shutdown=2,
        )
    ).run()
