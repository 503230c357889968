"""The provider simulator: every upstream wire format at one address, for load and end-to-end tests.

`app` is the aiohttp app (routes, latency, limits, fault markers; `taskq simulator` serves it),
`bodies` the success bodies of each flavor, `faults` each flavor's error and rate-limit responses.
"""
