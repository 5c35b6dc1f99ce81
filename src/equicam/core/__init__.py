"""The library: everything that runs without Qt or napari."""
