"""The results intake: the HTTP API through which each server's agent reports
experiment results and heartbeats (``smart-intake``, its own process, any number of
replicas).

Modules, each with one job:

- ``schema``: the request bodies (pydantic), the wire contract in code;
- ``keys``: key hash → Domain, a cache fed by a watch of Domains;
- ``experiments``: a cache of Experiments (ownership, variants, recorded sequences);
- ``incarnations``: which agent incarnation (counts database on a server) a report
  comes from, and what each has reported, so a new server's counts add;
- ``status``: pure decisions: whether a report is taken (``admit``: sequences,
  monotone and plausible counts) and what a write changes (statistics from
  ``smart_operator.stats``);
- ``writer``: the newest report per object (``smart_operator.coalesce``), written
  as conditional status patches with re-read and retry on conflicts; the statistics
  run on a small thread pool, off the event loop;
- ``views``: the request handlers; ``app``: ``create_app()``; ``main``: the process;
- ``settings``: ``SMART_INTAKE_*``; ``metrics``: Prometheus metrics.

Only ``smart_operator.clients.results`` talks to Kubernetes; ``docs/intake-api.md``
describes the contract for the agent's authors.
"""
