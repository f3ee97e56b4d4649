"""Speed and memory benchmarks (``python -m benchmarks`` or ``cdn bench``); reported, never asserted."""
from __future__ import annotations


def write_result(result: dict, path: str | None) -> dict:
    """Write ``result`` as indented JSON to ``path`` (its folder created) when a path is given; return ``result``."""
    if path:
        import json
        from pathlib import Path

        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(json.dumps(result, indent=1))
    return result
