"""Completion webhooks: Standard Webhooks signing, SSRF guard and delivery of one attempt.

Import the submodules directly: `signing` and `ssrf` are pure and safe for the intake, while
`sender` pulls in aiohttp, which only the worker should load.
"""
