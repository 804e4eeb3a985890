"""The bare-framework floor of a recall: a FastAPI endpoint that parses the service's own
``RecallRequest`` strictly and answers ``k`` items shaped like the service's, with orjson, under
uvicorn in one process, as ``nsprecall serve`` runs. No store, no model, no index: whatever the
service spends above this is its own work. Run by ``bench/request_curves.py``:

    python bench/floor_app.py PORT
"""

from __future__ import annotations

import sys

import uvicorn
from fastapi import FastAPI
from fastapi.responses import ORJSONResponse

from service.schemas import RecallRequest

ITEM_IDS = [f"i{n}" for n in range(1000)]

app = FastAPI()


@app.post("/v1/recall")
async def recall(body: RecallRequest) -> ORJSONResponse:
    k = body.k or 100
    items = [
        {"item_id": item, "score": 1.0 / (rank + 1), "channels": {"nsp": {"rank": rank + 1, "score": 0.5}}}
        for rank, item in enumerate(ITEM_IDS[:k])
    ]
    answer = {
        "user_id": body.user_id,
        "bundle_version": 1,
        "source": "model",
        "degraded": False,
        "items": items,
        "scenario": "recommendation" if body.query is None else "search",
        "answered_channels": ["nsp"],
        "missing_channels": [],
    }
    return ORJSONResponse(answer)


@app.get("/readyz")
async def ready() -> dict[str, str]:
    return {"status": "ready"}


if __name__ == "__main__":
    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning", access_log=False)
