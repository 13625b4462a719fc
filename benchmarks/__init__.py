"""Side-by-side speed benchmarks of the kit against its baselines: `python -m benchmarks.run --help`."""
