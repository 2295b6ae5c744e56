"""The analysts' review app (issue 6).

A FastAPI app over the published snapshot (read-only DuckDB named in ``<publish_dir>/CURRENT``) and a
decisions store of its own (SQLAlchemy, SQLite by default). ``create_app`` builds it; ``cli`` holds the
functions behind ``tradesentry review ...``; ``airflow_plugin`` mounts it into the Airflow API server.
"""
