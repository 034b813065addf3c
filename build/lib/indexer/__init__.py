"""modx indexer: embed the gallery with a snapshot, build/save/load FAISS indexes, swap them.

Imports only `trainer`, never `service`.
"""
