"""Everything the tests share besides fixtures (those are in tests/conftest.py).

env           where Redis is (REAL_REDIS_URL), provider keys, size knobs of the proof tests
clients       the Redis clients of the tests, typed as taskq's client Protocols (sync_client, fake_client)
settings      make_settings: the one Settings builder, with named profiles
orgs          new_org, auth
tasks         admit tasks through the real admission path; read task fields and counters
drain         run_drain: a drain in the test process until a condition holds
deliveries    outbox records, the delivery loop until a condition holds, delivery records
receiver      the webhook Receiver (in the test's loop, on a thread, or as ReceiverProcess)
upstream      the provider Upstream (the simulator or the prompt-steered stub) with an outage switch
served        an aiohttp app on a thread of the test process
processes     real taskq processes (intake, workers, simulator) in their own sessions
waits         wait_for, and stuck_work to say what was left when a wait ran out
redis_server  private Redis servers (PrivateRedis, RedisServer), free_port
sentinel      valkey nodes with AOF and a Sentinel group
cluster       a throwaway Redis Cluster
submitters    clients that keep submitting batches through a running intake
failover      the Sentinel failover scenario (the test and bench/failover.py)
adapters      a provider adapter run against canned replies (httpx.MockTransport)
hook_receiver the Receiver's process entry point
"""
