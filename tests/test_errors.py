"""The error table: every code has a class, every class a status, and errors.py's tree is the code's."""

from __future__ import annotations

import os
import re
import signal

import pytest
import redis

from taskq import errors
from taskq.api.errors import STATUS, status_of
from taskq.errors import TASK_FAILURES, Code, TaskqError
from tests.support.clients import Client


def subclasses(cls: type[TaskqError]) -> list[type[TaskqError]]:
    found: list[type[TaskqError]] = []
    for sub in cls.__subclasses__():
        found += [sub, *subclasses(sub)]
    return found


def taskq_classes() -> list[type[TaskqError]]:
    import taskq.api
    import taskq.cli  # noqa: F401

    return [errors.TaskqError, *(c for c in subclasses(TaskqError) if c.__module__.startswith("taskq."))]


def test_every_error_class_is_in_errors_py_and_has_its_own_status() -> None:
    for cls in taskq_classes():
        assert cls.__module__ == "taskq.errors", f"{cls.__qualname__} is defined outside taskq.errors"
        assert cls in STATUS, f"{cls.__name__} has no row in taskq.api.errors.STATUS"
        assert 400 <= STATUS[cls] <= 599


def test_every_code_is_raised_by_a_class_with_a_status_or_only_says_why_a_task_failed() -> None:
    raised = {cls.code for cls in STATUS}
    for code in Code:
        assert (code in raised) != (code in TASK_FAILURES), code


def test_status_of_follows_the_class_not_the_code() -> None:
    assert status_of(errors.ValidationFailed("bad")) == 400
    assert status_of(errors.InvalidBatch("bad")) == 422
    assert status_of(errors.NotRedeliverable("later")) == 409
    assert status_of(errors.MissingApiKey("none")) == 401
    assert status_of(errors.InsufficientCredits("poor")) == 403

    class Unlisted(errors.NotFound):
        pass

    assert status_of(Unlisted("gone")) == 404  # a class without a row answers as its parent


def test_the_docstring_tree_matches_the_classes_and_their_codes() -> None:
    doc = errors.__doc__ or ""
    drawn: dict[str, tuple[str, str]] = {}  # class -> (parent, code)
    parents: list[str] = []
    for line in doc.splitlines():
        match = re.match(r"^((?:[│ ]   )*)(?:[├└]── )?([A-Za-z]+)\s+(\(code\)|[A-Z_]+)", line)
        if not match or not match.group(2)[0].isupper() or match.group(2).isupper():
            continue
        depth = len(match.group(1)) // 4 + (1 if "──" in line else 0)
        parents[depth:] = [match.group(2)]
        drawn[match.group(2)] = (parents[depth - 1] if depth else "", match.group(3))
    actual = {
        cls.__name__: (cls.__base__.__name__ if cls is not TaskqError else "", cls.code.value)
        for cls in taskq_classes()
        if cls.__base__ is not None
    }
    actual["TaskqError"] = ("", "(code)")
    assert drawn == actual


def test_every_key_without_arguments_is_a_declared_attribute_of_shard() -> None:
    from taskq.keys import TEMPLATES, Shard

    fixed = {name for name, template in TEMPLATES.items() if "{" not in template.replace("{tag}", "")}
    declared = {name for name, value in vars(Shard).items() if type(value).__name__ == "_Key"}
    assert declared == fixed  # declared in the class body: mypy knows them, and a typo fails mypy
    shard = Shard(7)
    assert (shard.proc, shard.wh_due, shard.flow) == ("tq:{s7}:proc", "tq:{s7}:wh:due", "tq:{s7}:flow")
    assert all(getattr(shard, name) == TEMPLATES[name].format(tag=shard.tag) for name in fixed)
    misspelt = "prco"
    with pytest.raises(AttributeError):
        getattr(shard, misspelt)  # a misspelt key name never resolves


@pytest.mark.redis
def test_a_started_script_call_is_one_evalsha_reloads_after_noscript_and_raises_its_error(
    private_redis: Client,
) -> None:
    from taskq.keys import Shard
    from taskq.scripts import Scripts

    shard, scripts = Shard(0), Scripts(private_redis)
    keys = [shard.org_tasks("o"), shard.org("o")]
    private_redis.script_flush()  # the server lost its scripts: the call loads it and runs
    assert scripts.start("trim_listing", keys=keys, args=[shard.tag, 10])() == 0

    def evalsha_calls() -> int:
        return int(private_redis.info("commandstats").get("cmdstat_evalsha", {}).get("calls", 0))

    before = evalsha_calls()
    assert scripts.start("trim_listing", keys=keys, args=[shard.tag, 10])() == 0
    assert evalsha_calls() - before == 1
    reply = scripts.start("trim_listing", keys=keys, args=[shard.tag, "not a number"])
    with pytest.raises(redis.ResponseError):
        reply()


@pytest.mark.redis
def test_a_forked_process_starts_script_calls_on_helper_threads_of_its_own(
    private_redis: Client,
) -> None:
    from taskq.keys import Shard
    from taskq.scripts import Scripts

    shard = Shard(0)
    keys, args = [shard.org_tasks("o"), shard.org("o")], [shard.tag, 10]
    assert Scripts(private_redis).start("trim_listing", keys=keys, args=args)() == 0  # helpers started
    where = private_redis.connection_pool.connection_kwargs
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child reports through its exit status
        signal.alarm(10)  # a call waiting for a helper thread that does not exist here: killed, status -14
        child = redis.Redis(host=where["host"], port=where["port"], decode_responses=True)
        os._exit(0 if Scripts(child).start("trim_listing", keys=keys, args=args)() == 0 else 1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
