"""The data the compiler resolves against, in one place: the provider catalog (`catalog`, from
`providers.json`), model prices and context windows (`prices`, from `prices.json`), the script
that regenerates that table from LiteLLM's data (`pricegen`) and media models' unit prices
(`media_prices`, from the hand-kept `media_prices.json`).

May import: `compiler.diagnostics` and `runtime.plan`.
"""
