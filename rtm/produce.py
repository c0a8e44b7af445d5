"""`rtm produce`: post a JSONL file through the gateway in batches."""

from __future__ import annotations

import asyncio
import time
import zlib
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx
import orjson
from tqdm import tqdm

from rtm.devstack import dev_key_path
from streams.settings import Settings


@dataclass
class ProduceResult:
    posted: int = 0
    accepted: int = 0
    duplicates: int = 0
    rejected: int = 0
    requests: int = 0
    elapsed_s: float = 0.0
    rejections: list[dict[str, Any]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["rejections"] = self.rejections[:20]
        return d


def api_key(settings: Settings) -> str:
    if settings.gateway.key is not None:
        return settings.gateway.key.get_secret_value()
    path = dev_key_path(settings)
    if not path.exists():
        raise RuntimeError("no API key: set RTM_API_KEY, or run `rtm up` for the dev key")
    return path.read_text().strip()


def _lane(line: bytes, lanes: int) -> int:
    """Same patient, same lane: per-patient arrival order survives concurrent posting."""
    try:
        pid = orjson.loads(line).get("patient_id")
    except (orjson.JSONDecodeError, AttributeError):
        pid = None
    return zlib.crc32(str(pid).encode()) % lanes


def _batches(path: Path, size: int, lanes: int) -> Iterator[tuple[int, list[bytes]]]:
    pending: list[list[bytes]] = [[] for _ in range(lanes)]
    with path.open("rb") as f:
        for line in f:
            if line.strip():
                lane = _lane(line, lanes) if lanes > 1 else 0
                pending[lane].append(line.rstrip(b"\n"))
                if len(pending[lane]) >= size:
                    yield lane, pending[lane]
                    pending[lane] = []
    for lane, batch in enumerate(pending):
        if batch:
            yield lane, batch


async def produce_file(
    settings: Settings,
    path: Path,
    url: str | None = None,
    batch_size: int = 500,
    concurrency: int = 4,
    progress: bool = False,
) -> ProduceResult:
    """Post NDJSON batches with bounded concurrency; a failed request is retried, not skipped."""
    base = url or f"http://{settings.gateway.host}:{settings.gateway.port}"
    headers = {
        "Authorization": f"Bearer {api_key(settings)}",
        "Content-Type": "application/x-ndjson",
    }
    result = ProduceResult()
    total = sum(1 for line in path.open("rb") if line.strip())
    bar = tqdm(total=total, unit="ev", disable=not progress, file=None)
    queues: list[asyncio.Queue[list[bytes] | None]] = [
        asyncio.Queue(maxsize=2) for _ in range(concurrency)
    ]
    t0 = time.perf_counter()

    async def sender(client: httpx.AsyncClient, queue: asyncio.Queue[list[bytes] | None]) -> None:
        while (batch := await queue.get()) is not None:
            body = b"\n".join(batch)
            for attempt in range(8):
                try:
                    resp = await client.post(f"{base}/v1/events", content=body, headers=headers)
                except httpx.TransportError:
                    await asyncio.sleep(0.2 * 2**attempt)
                    continue
                if resp.status_code >= 500:
                    await asyncio.sleep(0.2 * 2**attempt)
                    continue
                break
            else:
                raise RuntimeError("gateway kept failing; stopping without skipping events")
            if resp.status_code != 200:
                raise RuntimeError(f"gateway answered {resp.status_code}: {resp.text[:300]}")
            data = resp.json()
            result.requests += 1
            result.posted += len(batch)
            result.accepted += data["accepted"]
            result.duplicates += len(data["duplicates"])
            result.rejected += len(data["rejected"])
            result.rejections.extend(data["rejected"][:5])
            bar.update(len(batch))

    async with httpx.AsyncClient(timeout=60.0) as client:
        workers = [asyncio.create_task(sender(client, q)) for q in queues]
        for lane, batch in _batches(path, batch_size, concurrency):
            await queues[lane].put(batch)
        for q in queues:
            await q.put(None)
        await asyncio.gather(*workers)
    bar.close()
    result.elapsed_s = time.perf_counter() - t0
    return result
