"""python -m faster_server: serve on $HOST:$PORT (default 0.0.0.0:8000)."""
import logging
import os

import uvicorn

from .app import build_app
from .settings import FasterSettings


def main() -> None:
    logging.basicConfig(level=os.environ.get("LOG_LEVEL", "INFO").upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = FasterSettings()
    settings.check_access()
    app = build_app(settings)
    uvicorn.run(app, host=settings.host, port=settings.port, log_level=os.environ.get("LOG_LEVEL", "info").lower(),
                access_log=os.environ.get("ACCESS_LOG", "1") not in ("0", "false", "no"), timeout_keep_alive=30,
                # realtime sessions: one client message at most this big (1009 beyond), a ping every 20 s keeps
                # the proxies in front from timing out a quiet session and finds dead peers; no compression of
                # base64 audio (it does not shrink)
                ws_max_size=settings.realtime_max_event_bytes, ws_ping_interval=20, ws_ping_timeout=20,
                ws_per_message_deflate=False)


if __name__ == "__main__":
    main()
