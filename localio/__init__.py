"""Local I/O both programs (the agent and the cloud side) do on their own host: atomic file
writes, signing-key files, typed reading of TOML config files, command-line plumbing.

`shared` is the wire contract only (bytes in, typed documents out, no I/O); what touches the
disk or the terminal lives here.
"""
