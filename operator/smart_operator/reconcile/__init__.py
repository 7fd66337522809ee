"""The reconcilers: per kind, one pass over one object that observes the world through
the ports (``smart_operator.ports``), decides with the pure functions of its kind
(``domains``, ``experiments``, ``revisions``, ``customers``), and acts through the ports
again; every status goes through the one ``status.StatusWriter``.

No SDK, no kopf: the handlers wire the clients in, the unit tests wire in fakes.
"""
