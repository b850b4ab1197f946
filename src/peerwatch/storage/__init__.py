"""Storage: SQLAlchemy Core tables and Alembic migrations. SQLite by default, PostgreSQL by URL."""
