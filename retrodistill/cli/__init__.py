"""The ``retrodistill`` command line: one thin module per command over the library's stages."""
