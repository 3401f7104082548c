"""KEDA's ``externalscaler.proto`` and the Python code generated from it (see README.md)."""
