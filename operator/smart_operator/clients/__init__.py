"""The operator's only doors to outside systems. Every other module is pure or a thin
kopf registration; SDKs of outside systems are imported here and nowhere else."""
