"""Synthetic training data: ICT FaceKit heads, procedural appearance, a CPU rasteriser, 3D ground truth."""
