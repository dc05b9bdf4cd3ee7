"""Networks with EG3D's module tree and parameter names."""
