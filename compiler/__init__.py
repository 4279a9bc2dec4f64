"""sidegate compiler: spec text -> plan (parse, validate, resolve, check, lower) and the CLI."""
