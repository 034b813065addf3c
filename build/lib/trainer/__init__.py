"""modx learning core: models, Mod-X losses, phase training, drift and recall.

Importable without any service dependency.
"""
