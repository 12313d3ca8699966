"""The streaming pipeline: thin Faust wiring around the verifier.

DESIGN "Pipeline": intake → re-key by domain → resolve → re-key by mail host
→ probe → verdicts, with retry tiers and a dead-letter topic. The modules:

- ``schemas``: the Avro schemas in ``schemas/`` (the wire contract), loaded,
  resolved and fingerprinted once per process;
- ``records``: the events as frozen dataclasses mirroring those schemas, and
  their conversions to and from the core's values;
- ``codecs``: events to bytes (Avro single-object encoding) and JSON, and the
  Faust codecs (registered by ``register_codecs()``, never at import);
- ``topology``: topic and table names and sizes from Settings;
- ``inputs``: address lists (text, CSV, JSON lines) → requests.

Importing this package, or any module in it, has no side effects.
"""
