"""xnat-prep: XNAT archive -> verified DICOM -> NIfTI -> results back on XNAT."""

__version__ = "0.1.0"
