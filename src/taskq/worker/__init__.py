"""The worker runtime: asyncio drains of provider calls, hosted by RQ worker processes."""
