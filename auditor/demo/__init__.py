"""The demo: an example shop (``app``), the clients that send it traffic (``traffic``),
and the runner behind ``redirect-auditor demo`` (``run``)."""
