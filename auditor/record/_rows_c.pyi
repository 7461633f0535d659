from collections.abc import Callable
from typing import Any

class FastRows:
    counts: tuple[int, int]
    def __init__(
        self,
        header_index: dict[bytes, int],
        urls: dict[Any, Any],
        locations: dict[Any, Any],
        connections: dict[Any, Any],
        servers: dict[Any, Any],
        keys: dict[str, str],
        worker_id: str,
        store_client_ip: bool,
        fallback: Callable[[tuple[Any, ...]], tuple[Any, ...]],
    ) -> None: ...
    def build(self, item: tuple[Any, ...]) -> tuple[Any, ...]: ...
