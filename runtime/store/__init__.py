"""The state store: peewee tables and migrations (`models`), the database behind one worker-thread
seam, sqlite or PostgreSQL (`database`), the batched spend writer (`spend`), and the spend archive
to S3-compatible storage (`archive`; its encodings in `archive_encode`, its botocore client in
`bucket`).

May import: the plan, `runtime.errors`, `runtime.observe`.
"""
