"""The data the compiler resolves against, in one place: the provider catalog (`catalog`, from
`providers.json`), model prices and context windows (`prices`, from `prices.json`) and the script
that regenerates that table from LiteLLM's data (`pricegen`).

May import: `compiler.diagnostics` and `runtime.plan`.
"""
