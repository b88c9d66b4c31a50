"""Programs the deploy installs on the host and runs there (standard library only)."""
