"""TriFace engine: tri-plane generator, volume renderer, mesh extraction, checkpoint import.

Knows nothing of Blender; the add-on talks to it through a separate process.
"""

__version__ = "0.1.0"
