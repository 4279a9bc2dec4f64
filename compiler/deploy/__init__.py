"""`sidegate render`: the spec's `deploy` section (`section`), Kubernetes/compose/systemd files from
Jinja2 `templates/` (`render`).

May import: the pipeline (`compiler.*` top-level modules), `compiler.sections`, `runtime.plan`.
"""
