"""Neural volume rendering of tri-planes: plane sampling, rays, importance sampling, compositing."""
