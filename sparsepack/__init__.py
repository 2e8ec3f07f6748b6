"""sparsepack: get OpenSearch neural sparse models into production."""

__version__ = "0.1.0"
