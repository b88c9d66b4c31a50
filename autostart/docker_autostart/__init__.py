"""docker-autostart: an HTTP proxy that starts a service's containers on its first request
and stops them when idle. Standard library + aiohttp (3.8 or newer) only, so Debian
bookworm's `python3-aiohttp` is all a host needs. See autostart/README.md."""

__version__ = "1.0.0"
