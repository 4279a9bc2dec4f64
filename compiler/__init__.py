"""sidegate compiler: spec text -> plan (parse, validate, resolve, check, lower) and the CLI.

Imports nothing itself, so `sidegate serve --plan` never loads the parsers; use the submodules
(`compiler.pipeline.compile_text`, `compiler.cli.main`...).
"""

__all__: list[str] = []
