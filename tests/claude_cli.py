"""Install the pinned Claude Code CLI into a cache outside the repo, once.

The tests run the real CLI (a native binary shipped in npm packages) inside the Daytona
double's sandboxes. `.ci/run` calls this module before pytest so the download is not part
of any test; the `claude_bin_dir` fixture calls it again, which is then a cheap check.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

#: Exact version: on Node < 22 an unpinned install silently picks 2.1.197.
CLAUDE_CODE_VERSION = "2.1.332"


def cache_dir() -> Path:
    root = os.environ.get("MAISON_TEST_CACHE") or Path.home() / ".cache" / "maison-slack"
    return Path(root) / f"claude-code-{CLAUDE_CODE_VERSION}"


def _version_ok(claude: Path) -> bool:
    try:
        out = subprocess.run(
            [str(claude), "--version"], capture_output=True, text=True, timeout=60, check=False
        )
    except OSError:
        return False
    return out.returncode == 0 and out.stdout.startswith(CLAUDE_CODE_VERSION)


def ensure_claude_cli() -> Path:
    """Return the directory holding the `claude` executable, installing it if needed."""
    target = cache_dir()
    bin_dir = target / "node_modules" / ".bin"
    if _version_ok(bin_dir / "claude"):
        return bin_dir
    target.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [
            "npm", "install", "--no-audit", "--no-fund", "--loglevel=error",
            "--prefix", str(target), f"@anthropic-ai/claude-code@{CLAUDE_CODE_VERSION}",
        ],
        check=True,
    )
    if not _version_ok(bin_dir / "claude"):
        raise RuntimeError(f"Claude Code {CLAUDE_CODE_VERSION} did not install into {target}")
    return bin_dir


if __name__ == "__main__":
    print(ensure_claude_cli())
    sys.exit(0)
