"""The only code that speaks HTTP: the client, retries, error mapping, server capabilities."""
