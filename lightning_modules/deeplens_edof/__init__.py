"""DeepLens EDoF: a lens and a restoration network trained end to end on rendered images."""
