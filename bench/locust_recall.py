"""Locust load for ``bench/serving.py``: POST /v1/recall for random users with history, each
simulated client at a constant request rate (``BENCH_USER_RPS``)."""

import os
import random

from locust import FastHttpUser, constant_throughput, task

USERS = int(os.environ.get("BENCH_USERS", "2000"))
K = int(os.environ.get("BENCH_K", "200"))


class RecallClient(FastHttpUser):
    wait_time = constant_throughput(float(os.environ.get("BENCH_USER_RPS", "5")))

    @task
    def recall(self) -> None:
        body = {"user_id": f"u{random.randrange(USERS)}", "k": K}
        with self.client.post("/v1/recall", json=body, name="recall", catch_response=True) as response:
            if response.status_code != 200:
                response.failure(f"HTTP {response.status_code}")
