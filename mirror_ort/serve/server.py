"""Run the app with uvicorn on a socket bound here, so a busy port is a one-line error and port 0 works.

SIGTERM or Ctrl-C: uvicorn stops accepting, lets running requests finish for ``shutdown_timeout``
seconds, cancels the rest, then the app's shutdown stops the generation and frees the sessions.
"""

import copy
import ipaddress
import logging
import signal
import socket

import uvicorn

from ..errors import MirrorError

log = logging.getLogger("mirror_ort.serve")


def listen(host: str, port: int) -> socket.socket:
    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
        return socket.create_server((host, port), family=family, backlog=128)
    except OSError as e:
        raise MirrorError(f"cannot listen on {host}:{port} ({e.strerror or e}): pick another --port or --host") from None


def run(app, host: str = "127.0.0.1", port: int = 8000, shutdown_timeout: float = 30.0, describe: str = "",
        secured: bool = False) -> None:
    """Serve until SIGTERM or Ctrl-C (then uvicorn raises the signal again, as a process manager expects)."""
    sock = listen(host, port)
    config = uvicorn.Config(app, log_config=_log_config(), timeout_graceful_shutdown=shutdown_timeout,
                            lifespan="on")
    bound = sock.getsockname()[1]
    shown = f"[{host}]" if ":" in host else host
    log.info("mirror-ort serving %sat http://%s:%d/v1 (Ctrl-C stops)", f"{describe} " if describe else "", shown,
             bound)
    if not secured and not _loopback(host):
        log.warning("listening on %s without --api-key: anyone who can reach this address can use the model", host)
    server = _Server(config)
    server.run(sockets=[sock])
    if server.interrupted:  # Ctrl-C: exit code 130 (cli.py) even where uvicorn's own re-raise got lost
        raise KeyboardInterrupt


class _Server(uvicorn.Server):
    """uvicorn's server, remembering a Ctrl-C. uvicorn raises the signal again once it has shut
    down, but asyncio's runner can take that second SIGINT as a cancel of a main task that is
    already finishing, and then the process would exit 0."""

    interrupted = False

    def handle_exit(self, sig, frame) -> None:
        self.interrupted = self.interrupted or sig == signal.SIGINT
        super().handle_exit(sig, frame)


def _loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def _log_config() -> dict:
    """uvicorn's logging, with this package's server log beside it."""
    config = copy.deepcopy(uvicorn.config.LOGGING_CONFIG)
    config["loggers"]["mirror_ort.serve"] = {"handlers": ["default"], "level": "INFO", "propagate": False}
    return config
