"""The versioned catalog: entities, rows, the store, operations, records, refs, adding files,
gc/verify and the alembic migrations. Stands on files/ and probe/."""
