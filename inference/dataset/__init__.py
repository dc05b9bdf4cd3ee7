"""The engine's side of a multi-view dataset (torch): `sample` (random heads as faces) and `neural` (the model's
own renders of a face from the dataset's cameras). The batch orchestrator that drives them is `inference.batch`.
"""
