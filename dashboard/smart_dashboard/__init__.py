"""The read-only customer dashboard: each customer sees only their own domains,
experiments and results, live. Imports only the resource models of the operator.
"""
