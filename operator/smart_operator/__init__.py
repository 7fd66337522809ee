"""Smart Server operator: reconciles Customer, Domain and Experiment resources.

Layers, from the inside out (import-linter keeps the direction):

- ``models``: the pydantic resource models, the single source of the CRDs. Pure.
- ``plans``, ``conditions``, ``customers``, ``settings``: pure functions that build the
  desired state and the status from a resource and the configuration. No I/O.
- ``clients``: the only modules that talk to outside systems (the Kubernetes API).
- ``handlers``: thin kopf registrations that call the layers above.
- ``main``: the process entry point.
"""
