"""The ``captions`` command line."""
