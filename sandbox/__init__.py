"""The local sandbox host: helpers to reach it from Python (client.py) and the demo."""
