# sidegate dev recipes. `just --list` shows them.
py := ".venv/bin/python"

# Start the sidecar on a spec (default: the quickstart).
serve spec="examples/quickstart.yaml":
    {{py}} -m sidegate.compiler.cli serve {{spec}}

# Run the test suite.
test *args:
    {{py}} -m pytest -q {{args}}

# Lint the examples and the code.
lint:
    {{py}} -m sidegate.compiler.cli lint --strict examples/*.yaml
    {{py}} -m ruff check .

# Strict type check.
typecheck:
    {{py}} -m mypy

# Format the code.
fmt:
    {{py}} -m ruff format .
    {{py}} -m ruff check --fix .

# Regenerate the golden compiler outputs after an intended change (review the diff!).
golden-update:
    SIDEGATE_GOLDEN_UPDATE=1 {{py}} -m pytest -q tests/test_golden.py

# Benchmark: gateway vs direct mock upstream and the stack ceiling, with wrk and 1,000 paced streams
# (see tests/bench/run.py); `just bench --vs portkey --vs litellm` runs the same scenarios against both.
bench *args:
    {{py}} -m tests.bench.run {{args}}

# Only the paced-streams client against a URL (see tests/bench/paced.py), e.g. `just bench-paced URL --streams 200`.
bench-paced *args:
    {{py}} -m tests.bench.paced {{args}}

# Pin the image's dependencies (compiler/deploy/constraints.txt) to what `pip install .` resolves now.
constraints:
    rm -rf .bench/constraints && python3 -m venv .bench/constraints && .bench/constraints/bin/pip install -q .
    (sed -n '1,2p' compiler/deploy/constraints.txt; .bench/constraints/bin/pip freeze --exclude sidegate) > compiler/deploy/constraints.tmp
    mv compiler/deploy/constraints.tmp compiler/deploy/constraints.txt

# Install the LiteLLM proxy from PyPI into its own venv (.bench/litellm) for `just bench --vs litellm`.
bench-litellm-setup:
    python3 -m venv .bench/litellm
    .bench/litellm/bin/pip install -q 'litellm[proxy]'

# Install the Portkey gateway 1.15 from npm into .bench/portkey for `just bench --vs portkey`
# (@hono/node-server pinned to 1.13.5 through overrides, with Portkey's own one-line patch applied).
bench-portkey-setup:
    {{py}} -m tests.bench.portkey setup
