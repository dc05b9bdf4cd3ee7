"""Layer 1, ground: what every other layer stands on; it imports nothing of the engine.

    cameras     EG3D's camera conventions and the one place EG3D world <-> Blender frames change
    errors      the errors users see (TriFaceError and its kinds)
    fileio      atomic writes
    threads     CPU thread settings and worker pools
    allocator   the C allocator's settings for a long-lived engine
    wire        the engine's protocol (JSON lines, result arrays); the add-on loads this file by path
"""
