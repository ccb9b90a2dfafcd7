"""signproxy: an S3 request signing proxy."""

__version__ = "0.1.0"
