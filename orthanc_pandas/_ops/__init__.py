"""Operations on a server's data through ``_http``: read, refresh, tags, headers, files,
labels, jobs, gateway, volumes, masks. Each takes rows and a client; none keeps state."""
