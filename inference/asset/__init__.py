"""The head as a production asset: the ICT template registered onto a reconstruction (fixed quads, one UV
tile, ARKit shape keys) and a texture baked from the photo and the model's 3D colour field."""
