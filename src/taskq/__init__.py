"""taskq: a Redis-backed task queue service for asynchronous AI-provider tasks."""

__version__ = "0.1.0"
