"""The package contract: facts every layer agrees on (limits, formats, naming, the manifest). No torch, no jinja."""
