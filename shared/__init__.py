"""The wire contract both sides speak: topics, messages, signed documents, signing, codecs.

Bytes in, typed objects out. This package imports neither `agent` nor `cloud` and does no
network I/O; the only file access is `keys.save_signing_key`/`load_signing_key`.
"""
