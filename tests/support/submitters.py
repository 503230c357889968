"""Clients that keep submitting batches through a running intake, and remember what they were told."""

from __future__ import annotations

import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import httpx


@dataclass
class Submitter:
    """Clients posting 10-task batches in a loop; remembers when each task was acknowledged."""

    url: str
    key: str
    acked: list[tuple[float, str]] = field(default_factory=list)
    answers: Counter[tuple[int, str]] = field(default_factory=Counter)
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self, client_no: int) -> None:
        headers = {"Authorization": f"Bearer {self.key}"}
        n = 0
        with httpx.Client(base_url=self.url, headers=headers, timeout=15) as client:
            while not self.stop.is_set():
                payload = {"prompt": f"client {client_no} batch {n}", "country": "US"}
                body = [{"taskType": "CHATGPT", "payload": payload} for _ in range(10)]
                n += 1
                r = client.post("/v1/async/task/batch", json=body)
                data = r.json()
                code = "ok" if r.status_code == 200 else data["error"]["code"]
                self.answers[(r.status_code, code)] += 1
                if r.status_code == 200:
                    assert data["success"] and data["summary"]["succeeded"] == 10
                    at = time.time()
                    self.acked += [(at, item["task"]["id"]) for item in data["results"]]
                time.sleep(0.02)


@dataclass
class KeyedSubmitter:
    """Clients posting 10-task batches with idempotency keys; a batch answered 503 (or not at all) is
    sent again with the same keys until it is answered. Remembers each key's task id and when."""

    url: str
    key: str
    hook: str
    acked: dict[str, tuple[float, str]] = field(default_factory=dict)  # idempotency key -> (at, task id)
    answers: Counter[tuple[int, str]] = field(default_factory=Counter)
    stop: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def ok_after(self, at: float) -> bool:
        with self.lock:
            return any(when >= at for when, _ in self.acked.values())

    def run(self, client_no: int) -> None:
        headers = {"Authorization": f"Bearer {self.key}"}
        n = 0
        with httpx.Client(base_url=self.url, headers=headers, timeout=30) as client:
            while not self.stop.is_set():
                keys = [f"c{client_no}-b{n}-t{i}" for i in range(10)]
                n += 1
                payloads = [{"prompt": k, "country": "US"} for k in keys]
                hook = {"url": self.hook}
                body = [{"taskType": "CHATGPT", "payload": p, "idempotencyKey": k, "webhook": hook}
                        for k, p in zip(keys, payloads, strict=True)]  # fmt: skip
                while not self._send(client, body):  # the same keys until an answer says what happened
                    time.sleep(0.05)
                time.sleep(0.02)

    def _send(self, client: httpx.Client, body: list[dict[str, Any]]) -> bool:
        try:
            r = client.post("/v1/async/task/batch", json=body)
        except httpx.HTTPError:
            self.answers[(0, "no answer")] += 1
            return False
        data = r.json()
        self.answers[(r.status_code, "ok" if r.status_code == 200 else data["error"]["code"])] += 1
        if r.status_code != 200:
            return False
        at = time.time()
        with self.lock:
            for item, task in zip(data["results"], body, strict=True):
                if item["success"]:
                    self.acked[task["idempotencyKey"]] = (at, item["task"]["id"])
                else:
                    assert item["error"]["code"] == "RESOURCE_ALREADY_EXISTS", item
                    self.acked.setdefault(task["idempotencyKey"], (at, item["error"]["details"]["taskId"]))
        return True
