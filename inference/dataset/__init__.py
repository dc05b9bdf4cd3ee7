"""Multi-view face datasets: a folder of photos, or random heads, to EG3D-style training data.

Pure parts, shared by the batch command, its Blender workers and the engine (numpy only, no torch, no bpy):
  views      the cameras each head is rendered from (EG3D's pose distribution), their labels and mirrors
  labels     dataset.json: writing, reading (floats or strings), merging, and EG3D's loader rules
  manifest   the sources keyed by content hash (cached by path, size and mtime), item ids and seeds, a group
             photo's faces, shards, item state, committing a complete item, atomic files
  runner     the coordinator: local worker pool, Ray, array-job shards, progress, reports, merge
The engine's part (torch): `sample` (random heads as faces) and `neural` (the model's own renders).
"""
