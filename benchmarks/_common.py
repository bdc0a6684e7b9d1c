"""Shared helpers of the benchmark scripts: timing, machine facts, output files."""
from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import subprocess
from pathlib import Path
from typing import Any

from adamc._bench import time_per_call  # noqa: F401  (shared by the benchmark scripts)

RESULTS = Path(__file__).resolve().parent / "results"


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine() -> dict[str, Any]:
    import adamc

    info = adamc.show_config(mode="dicts")
    return {
        "date": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "simd_level": info["simd_level"],
        "python": info["python"],
        "numpy": info["numpy"],
        "adamc": info["adamc"],
        "git": _git_revision(),
    }


def _git_revision() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, cwd=Path(__file__).parent, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def write_outputs(name: str, payload: dict[str, Any], markdown: str,
                  outdir: Path = RESULTS) -> tuple[Path, Path]:
    outdir.mkdir(parents=True, exist_ok=True)
    json_path, md_path = outdir / f"{name}.json", outdir / f"{name}.md"
    json_path.write_text(json.dumps(payload, indent=2) + "\n")
    md_path.write_text(markdown)
    return json_path, md_path


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines) + "\n"
