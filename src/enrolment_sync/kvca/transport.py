"""How bytes reach the upstream: aiohttp in production, any httpx transport in unit tests.

The client's logic (auth, paging, retries, error texts) sees only `Answer` and the two wire errors. In
production requests go straight through one aiohttp session: building httpx requests and responses cost
about half of the sync's CPU at 20,000 requests (bench/README.md), and the sync must run at the upstream's
pace, not the client's. Unit tests hand in `httpx.MockTransport`, which goes through `HttpxWire`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

import aiohttp
import httpx
import orjson
import yarl


class WireTimeout(Exception):
    """No answer in time."""


class WireError(Exception):
    """No answer at all (refused, reset, protocol error)."""


class Answer:
    """What the client needs of an HTTP answer."""

    __slots__ = ("content", "headers", "status_code")

    def __init__(self, status_code: int, headers: Mapping[str, str], content: bytes) -> None:
        self.status_code = status_code
        self.headers = headers
        self.content = content

    @property
    def text(self) -> str:
        return self.content.decode("utf-8", "replace")

    def json(self) -> Any:
        return orjson.loads(self.content)


class Wire(Protocol):
    async def request(
        self, method: str, path: str, *, params: dict[str, Any] | None, json_body: Any, headers: dict[str, str]
    ) -> Answer: ...

    async def aclose(self) -> None: ...


class AiohttpWire:
    def __init__(self, base_url: str, *, timeout_s: float, max_connections: int) -> None:
        self._base_url = base_url.rstrip("/")
        self._timeout = aiohttp.ClientTimeout(total=None, sock_connect=timeout_s, sock_read=timeout_s)
        self._max_connections = max_connections
        self._session: aiohttp.ClientSession | None = None

    def _get_session(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=self._max_connections, ttl_dns_cache=300),
                headers={"Accept": "application/json"},
                timeout=self._timeout,
            )
        return self._session

    async def request(
        self, method: str, path: str, *, params: dict[str, Any] | None, json_body: Any, headers: dict[str, str]
    ) -> Answer:
        try:
            # `path` comes percent-encoded (client.api_path); encoded=True keeps yarl from decoding or
            # normalising it, which would turn an id's `%2E%2E` back into a step up the path
            url = yarl.URL(self._base_url + path, encoded=True)
            async with self._get_session().request(
                method, url, params=params, json=json_body, headers=headers, allow_redirects=False
            ) as response:
                return Answer(response.status, response.headers, await response.read())
        except (TimeoutError, aiohttp.ServerTimeoutError) as exc:
            raise WireTimeout(type(exc).__name__) from exc
        except aiohttp.ClientError as exc:
            raise WireError(f"{type(exc).__name__}: {exc}") from exc

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()


class HttpxWire:
    """Any httpx transport (httpx.MockTransport in unit tests)."""

    def __init__(self, base_url: str, *, timeout_s: float, transport: httpx.AsyncBaseTransport) -> None:
        self._http = httpx.AsyncClient(
            base_url=base_url.rstrip("/"),
            timeout=httpx.Timeout(timeout_s),
            transport=transport,
            headers={"Accept": "application/json"},
        )

    async def request(
        self, method: str, path: str, *, params: dict[str, Any] | None, json_body: Any, headers: dict[str, str]
    ) -> Answer:
        try:
            response = await self._http.request(method, path, params=params, json=json_body, headers=headers)
        except httpx.TimeoutException as exc:
            raise WireTimeout(type(exc).__name__) from exc
        except httpx.TransportError as exc:
            raise WireError(f"{type(exc).__name__}: {exc}") from exc
        return Answer(response.status_code, response.headers, response.content)

    async def aclose(self) -> None:
        await self._http.aclose()
