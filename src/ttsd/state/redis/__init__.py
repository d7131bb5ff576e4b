"""State in Redis for distributed mode: one module per concept (index, board, rate limits, counters,
worker registry, job leases, sentence claims), every key named in ``keys``.

Workers reach Redis from their post-processing threads and their event loop; the API answers from
its event loop, so what it calls per request (index and board lookups, rate limits, idempotency
keys) goes through an asyncio client or the auto-pipeline and never blocks the loop.
"""
