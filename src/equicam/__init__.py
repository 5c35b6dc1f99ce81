"""napari-equicam: cross-modality equivariant class activation maps for brain-tumour MRI.

The package has three rooms:

- :mod:`equicam.core`: the library (BraTS I/O, synthetic data, model, losses, CAMs, metrics).
  No Qt and no napari imports.
- :mod:`equicam.plugin`: the napari face (reader, writer, sample data, widgets).
- :mod:`equicam.cli`: the ``equicam`` command line.
"""

__version__ = "0.1.0"
