"""What the test tiers, the benchmarks and the sandbox share: real servers, speech, hosts and request builders
(imported as `support.<module>`; tests/ is on the path through pytest's pythonpath)."""
