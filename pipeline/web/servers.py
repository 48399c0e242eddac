"""The run's HTTP servers, started together and stopped together: Prometheus metrics, the control API,
the live page. A port that cannot be used stops the ones already started and is named, with the
command-line option that changes it."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from pipeline.config import PipelineConfig, is_loopback
from pipeline.errors import ActionPipeError, PipelineError
from pipeline.supervision.view import PipelineView

logger = logging.getLogger(__name__)


@dataclass
class Servers:
    metrics_url: str | None = None
    control_url: str | None = None
    live_url: str | None = None
    _running: list = field(default_factory=list)

    def close(self) -> None:
        for server in self._running:
            server.shutdown()
            server.server_close()
        self._running.clear()

    def __enter__(self) -> "Servers":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def start(self, start: Callable, setting: str, host: str, port: int, option: str):
        """Run ``start`` (which binds ``host:port``) and keep the server it returns."""
        try:
            started = start()
        except ActionPipeError:  # a server that bound its port but did not start
            self.close()
            raise
        except OSError as exc:
            self.close()
            raise PipelineError(
                f"{setting} {port} on {host} cannot be used ({exc.strerror}): another process holds it? choose "
                f"another with {option} (0 picks a free one)"
            ) from None
        server = started[0] if isinstance(started, tuple) else started
        self._running.append(server)
        return server


def start_servers(config: PipelineConfig, view: PipelineView, registry, board_dir: Path) -> Servers:
    """Every server the config turns on; their addresses (a port of 0 is resolved) in the result."""
    servers = Servers()
    if config.metrics.enabled:
        from prometheus_client import start_http_server

        cfg = config.metrics
        server = servers.start(lambda: start_http_server(cfg.port, cfg.host, registry=registry),
                                "metrics.port", cfg.host, cfg.port, "--metrics-port")
        servers.metrics_url = f"http://{cfg.host}:{server.server_port}/metrics"
    if config.control.enabled:
        from pipeline.web.control_api import start_control_api

        cfg = config.control
        server = servers.start(lambda: start_control_api(view, cfg.host, cfg.port, cfg.token, cfg.media_roots),
                                "control.port", cfg.host, cfg.port, "--control-port")
        servers.control_url = f"http://{cfg.host}:{server.server_port}"
    if config.live_page.enabled:
        from pipeline.web.live_page import start_live_page

        cfg = config.live_page
        server = servers.start(lambda: start_live_page(view, board_dir, cfg.host, cfg.port),
                                "live_page.port", cfg.host, cfg.port, "--live-port")
        servers.live_url = f"http://{cfg.host}:{server.server_port}/"
        if not is_loopback(cfg.host):
            logger.warning("the live page listens on %s: anyone who can reach it sees the camera frames", cfg.host)
    return servers
