"""`sidegate import litellm`: a LiteLLM proxy config.yaml -> a sidegate spec, with comments
(`importer`; proxy-wide settings in `settings`, one model group's deployments in `groups`).

May import: as `compiler.importers`.
"""
