from collections.abc import Awaitable, Callable
from typing import Any

class Exchange:
    scope: Any
    _send: Any
    status: Any
    headers: list[tuple[bytes, bytes]] | None
    error: BaseException | None
    recorder: Any
    started_at: float
    ended_at: float
    body_size: int
    complete: bool
    def __init__(self, scope: Any, send: Any, started_at: float, recorder: Any = None) -> None: ...
    def send(self, message: Any) -> Awaitable[None]: ...

def to_portable(exchange: Any) -> tuple[Any, ...]: ...
def configure(
    to_portable_python: Callable[[Any], tuple[Any, ...]],
    route_reference: Callable[[Any], Any],
) -> None: ...

class Submitter:
    dropped_queue_full: int
    dropped_unreadable: int
    def __init__(
        self,
        queue: Any,
        limit: int,
        counter: memoryview | None,
        wake_at: int,
        on_batch: Callable[[], None],
    ) -> None: ...
    def submit(self, exchange: Any) -> None: ...
    def release(self) -> None: ...

class Watch:
    scope: Any
    exchange: Any
    started_at: float
    def __init__(self, scope: Any, send: Any, started_at: float, recorder: Any) -> None: ...
    def send(self, message: Any) -> Awaitable[None]: ...
