"""The traffic database: schema and migrations, the request journal, merge, retention."""
