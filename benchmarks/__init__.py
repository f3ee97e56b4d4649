"""Speed and memory benchmarks (``python -m benchmarks`` or ``cdn bench``); reported, never asserted."""
