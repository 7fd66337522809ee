"""Smart Server operator: reconciles Customer, Domain and Experiment resources, and the
results intake that writes the agents' reports onto them.

Layers, from the outside in (import-linter's layers contract keeps the direction; a
layer imports only the layers below it):

- ``main``, ``crdgen``: process entry points.
- ``handlers`` | ``intake``: wiring. ``handlers`` holds the kopf registrations (tens of
  lines per kind) and builds each reconciler from the clients (``handlers.context``);
  ``intake`` is the results API process. Neither imports the other.
- ``reconcile`` | ``clients``: never import each other.

  - ``reconcile``: per kind, one pass over one object: observe through the ports,
    decide with the pure functions, act through the ports; every status through the
    one ``reconcile.status.StatusWriter``. No SDK, no kopf.
  - ``clients``: the only modules that talk to outside systems (Kubernetes, Hetzner,
    Cloudflare, servers over SSH, Stripe). They implement the ports and map every SDK
    error onto ``errors`` at their boundary.

- Pure modules: ``ports`` (views and Protocols), ``errors`` (the one error tree),
  ``domains``, ``experiments``, ``revisions``, ``customers`` (each kind's decisions),
  ``billing`` (subscriptions, webhook events, the grace period),
  ``conditions``, ``analytics``, ``plans``, ``keys``, ``cloudinit``, ``templates``,
  ``stats``, ``settings``, ``background`` (loops that never die). No I/O, no SDK.
- ``models``: the pydantic resource models, the single source of the CRDs, with the
  condition types and reasons (``models.conditions``) and which writer owns which part
  of each status (``StatusModel.WRITERS``).
"""
