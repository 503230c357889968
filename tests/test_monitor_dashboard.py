"""The synchronous calls' lane (priority 11) on the console's queue depth by priority, the dashboard's
data and the Prometheus gauge (fakeredis and the real Redis)."""

from __future__ import annotations

import re
from typing import Any

from taskq import calls
from taskq.api import create_app
from tests.support.console import TOKEN, signed_in, task
from tests.support.orgs import auth
from tests.support.scheduler import Scheduler
from tests.support.settings import make_settings
from tests.support.tasks import request


def test_waiting_sync_calls_show_as_priority_11_beside_the_async_priorities(
    rclient: Any, store: Any, make_org: Any, settings: Any
) -> None:
    console = create_app(make_settings(admin_token=TOKEN), client=rclient).test_client()
    org_id, key = make_org()
    assert console.post("/v1/async/task", json=task(priority=3), headers=auth(key)).status_code == 200
    org = store.org(org_id)
    for i in range(2):  # two calls admitted as the intake admits them, waiting for a worker
        call = request(prompt=f"c{i}")
        op = calls.admit_op(org, call, calls.quick_uuid(), calls.price(call, settings), "inbox", settings)
        assert Scheduler(store.client).run(op)[0] == "ok"

    bearer = {"Authorization": f"Bearer {TOKEN}"}
    data = console.get("/dashboard/data", headers=bearer).json
    assert data is not None
    depth = {row["priority"]: row["count"] for row in data["byPriority"]}
    assert [row["priority"] for row in data["byPriority"]] == list(range(11, 0, -1))
    assert (depth[11], depth[3], sum(depth.values())) == (2, 1, 3)

    signed_in(console)
    page = console.get("/dashboard").data.decode()
    table = re.search(r'<table id="by-priority">(.*?)</table>', page, re.S)
    assert table, page[:500]
    rows = re.findall(r"<tr><td>(.*?)</td><td class=\"n\">(\d+)</td></tr>", table.group(1))
    assert [(re.sub(r"<[^>]+>", "", label).strip(), int(n)) for label, n in rows] == [
        ("11 sync calls waiting for a worker", 2),
        ("3", 1),
    ]

    scraped = console.get("/metrics", headers=bearer).data.decode()
    assert 'taskq_queue_depth{priority="11"} 2.0' in scraped
    assert 'taskq_queue_depth{priority="3"} 1.0' in scraped
