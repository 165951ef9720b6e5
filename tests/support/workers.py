"""``sync-worker`` processes for tests: started with the test's environment, always stopped."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
WORKER = [sys.executable, "-m", "sync_worker.main"]


@asynccontextmanager
async def running_worker(
    args: list[str], env: dict[str, str], log_path: Path
) -> AsyncIterator[asyncio.subprocess.Process]:
    """Start ``sync-worker`` with ``args`` (no HTTP server unless ``--http-port`` is given),
    its output in ``log_path``; afterwards SIGTERM, then SIGKILL after 10 s."""
    if "--http-port" not in args:
        args = [*args, "--http-port", "-1"]
    with log_path.open("wb") as log:
        process = await asyncio.create_subprocess_exec(
            *WORKER, *args, env=env, cwd=str(ROOT), stdout=log, stderr=asyncio.subprocess.STDOUT
        )
        try:
            yield process
        finally:
            if process.returncode is None:
                process.terminate()
                try:
                    await asyncio.wait_for(process.wait(), 10)
                except TimeoutError:
                    process.kill()
                    await process.wait()
