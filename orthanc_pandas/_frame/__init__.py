"""Pure frame code: the schema, JSON -> typed columns, tag names, matching, level frames. No HTTP."""
