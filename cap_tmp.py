import asyncio, tempfile, json
from pathlib import Path
import bench.live as L
with tempfile.TemporaryDirectory() as t:
    for n in (8, 12, 16, 24):
        for way in ("live", "today"):
            print(way, json.dumps(asyncio.run(L._capacity(way, n, Path(t)))), flush=True)
