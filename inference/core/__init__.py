"""Layer 2, core: the 3D-aware GAN itself and what it is made of, loaded from a model folder.

    networks     the tri-plane generator (EG3D's module tree and parameter names), encoder, local detail
    render       tri-plane sampling, rays and volume rendering
    config       a model folder's config.json (architecture, rendering, cameras, what it offers)
    model_io     model folders: loading, saving, checking state dicts; the bundled default model
    safe_pickle  reading an official EG3D snapshot without running anything it names (see `inference.convert`)
    latent       z and w sampling, truncation
    mesh         marching cubes over the density field, vertex colours
    export       PNG, PLY and GLB writers
    synthetic    ICT FaceKit heads, their rasteriser and 3D ground truth (training data, evaluation)
    training     the bookkeeping a training script shares (checkpoints, learning-rate schedule, logs)
"""
