"""Batch dataset creation, the orchestrator: a folder of photos (or random heads) -> an EG3D-style dataset.

Pure parts, shared by `scripts/batch_dataset.py`, its Blender workers and the engine (numpy only: no torch,
no bpy, and nothing of the engine above `ground`; a contract in pyproject.toml keeps it so):
  views      the cameras each head is rendered from (EG3D's pose distribution), their labels and mirrors
  labels     dataset.json: writing, reading (floats or strings), merging, and EG3D's loader rules
  manifest   the sources keyed by content hash (cached by path, size and mtime), item ids and seeds, a group
             photo's faces, shards, item state, committing a complete item, atomic files
  progress   progress lines, durations and the JSON-lines log
  runner     the coordinator: local worker pool, Ray, array-job shards, progress, reports, merge
The engine's side of a dataset (torch) is `inference.dataset`.
"""
