"""Layer 6, the engine: one warm process that serves the add-on, the batch workers and scripts.

    session   the engine's operations (invert, synthesize, edit, learn, dataset views), models kept loaded and
              faces cached by id
    server    the process: requests over stdin as JSON lines (`ground.wire`), events and results back;
              `python -m inference.engine.server` is what the add-on starts
"""
