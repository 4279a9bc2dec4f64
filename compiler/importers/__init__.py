"""Importers of other gateways' configurations into sidegate specs (`litellm/`), and the small YAML
writer they share (`yamlwrite`).

May import: the pipeline, `compiler.data`.
"""
