"""Shared runtime of the Bildungsraum services: what two or more of them need, nothing else."""
