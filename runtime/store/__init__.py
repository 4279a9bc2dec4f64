"""The state store: peewee tables and migrations (`models`), the database behind one worker-thread
seam, sqlite or PostgreSQL (`database`), and the batched spend writer (`spend`).

May import: the plan, `runtime.errors`, `runtime.observe`.
"""
