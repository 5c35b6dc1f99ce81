"""The napari face of equicam: reader, writer, sample data and widgets."""
